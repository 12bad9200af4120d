"""Packaging for operators: the systemd unit (mptcrypt.service) and `mptcrypt service install|uninstall`."""
