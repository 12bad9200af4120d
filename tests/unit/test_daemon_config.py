"""The daemon's configuration file: nothing in it is ignored, every mistake is one line and exit status 2; SIGHUP's
reload applies a good file and keeps the running configuration on a bad one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mptcrypt import cli
from mptcrypt.constants import PubCipher, SymCipher
from mptcrypt.core.config import Config, Policy
from mptcrypt.core.engine import Engine
from mptcrypt.daemon.config import DaemonConfig, describe, load_config
from mptcrypt.daemon.main import Daemon
from mptcrypt.errors import ConfigError
from mptcrypt.wire.tcp import ACK, SYN

from pktkit import C_ADDR, S_ADDR, segment, syn_options
from enginepair import EnginePair

GOOD = """\
ports = "22,443,5000-5100"
policy = "opportunistic"
pub_ciphers = ["p256", "x25519"]
sym_ciphers = "chacha20"
queue_num = 7
init_rto = 1
resume = false

[[rule]]
port = "22"
policy = "required"

[[rule]]
peer = "10.0.9.0/24"
policy = "off"
"""

KNOWN = ("closed_linger, fail_open, idle_timeout, init_retries, init_rto, key_lifetime, max_connections, "
         "max_held_per_connection, max_sessions_cached, policy, ports, pub_ciphers, queue_num, refuse_downgrade, "
         "rekey_bytes, rekey_interval, resume, rule, session_lifetime, sym_ciphers, workers")

# file text -> the one line after "mptcrypt: error: FILE: "
BAD_FILES = [
    # the case: a misspelt `peers` used to load as a rule for every peer, turning port 22 off for all
    ('[[rule]]\nport = "22"\npolicy = "off"\npeers = "10.0.9.0/24"\n',
     "rule 1: unknown key 'peers' (known: peer, policy, port); did you mean 'peer'?"),
    ('polcy = "off"\n', f"unknown key 'polcy' (known: {KNOWN}); did you mean 'policy'?"),
    ("[limits]\nmax_connections = 5\n", f"unknown key 'limits' (known: {KNOWN})"),
    ('[[rules]]\nport = "22"\npolicy = "off"\n', f"unknown key 'rules' (known: {KNOWN}); did you mean 'rule'?"),
    ('[rule]\nport = "22"\npolicy = "off"\n', "write each rule as [[rule]] (an array of tables), not [rule]"),
    ('[[rule]]\npolicy = "off"\n', "rule 1: a rule needs `policy` and at least one of `port`, `peer`"),
    ('[[rule]]\nport = "22"\npolicy = "of"\n', "rule 1: unknown policy 'of' (choose opportunistic, required, off)"),
    ("[[rule]]\npeer = 10\npolicy = \"off\"\n", "rule 1: bad peer 10 (an address or a network like 10.0.0.0/24)"),
    ('[[rule]]\nport = "22-x"\npolicy = "off"\n',
     "rule 1: bad port '22-x' in '22-x': use numbers and ranges like '80,443,5000-5100'"),
    ("queue_num = 4242.7\n", "queue_num must be a whole number, not 4242.7"),
    ('queue_num = "4242"\n', "queue_num must be a whole number, not '4242'"),
    ("queue_num = true\n", "queue_num must be a whole number, not True"),
    ("queue_num = 70000\n", "queue_num must be between 0 and 65533"),
    ("max_connections = 0\n", "max_connections must be at least 1, not 0"),
    ('init_rto = "fast"\n', "init_rto must be a number of seconds, not 'fast'"),
    ("idle_timeout = -1\n", "idle_timeout must be at least 0 s, not -1"),
    ('resume = "yes"\n', "resume must be true or false, not 'yes'"),
    ("ports = true\n", "ports must be a string like '80,443,5000-5100' or 'all', not True"),
    ("pub_ciphers = 5\n", "pub_ciphers must be a list like ['x25519', 'p256', 'rsa2048'], not 5"),
    ('sym_ciphers = ["aes256"]\n', "unknown sym_ciphers entry 'aes256' (choose from aes128, chacha20)"),
    ("sym_ciphers = []\n", "sym_ciphers must not be empty"),
]


def check_config(capsys, path) -> tuple[int, str, str]:
    code = cli.main(["daemon", "--check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("text, message", BAD_FILES, ids=[m.split(" (")[0][:40] for _t, m in BAD_FILES])
def test_every_mistake_is_one_line_and_exit_2(capsys, tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text)
    code, out, err = check_config(capsys, path)
    assert (code, out) == (2, "")
    assert err == f"mptcrypt: error: {path}: {message}\n"


def test_not_toml(capsys, tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('policy = "off\n')
    code, out, err = check_config(capsys, path)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"mptcrypt: error: config file {path} is not valid TOML: ") and "(at line 1" in err


def test_a_directory(capsys, tmp_path):
    code, _out, err = check_config(capsys, tmp_path)
    assert code == 2
    assert err == f"mptcrypt: error: config file {tmp_path} is a directory; give the path of a .toml file\n"


def test_not_utf8(capsys, tmp_path):
    path = tmp_path / "m.toml"
    path.write_bytes(b'policy = "off"\n# caf\xe9\n')
    code, _out, err = check_config(capsys, path)
    assert code == 2
    assert err == f"mptcrypt: error: config file {path} is not UTF-8 text (byte 20 is 0xe9)\n"


def test_unreadable(capsys, tmp_path, monkeypatch):
    path = tmp_path / "m.toml"
    path.write_text('policy = "off"\n')
    path.chmod(0)
    real = Path.read_bytes

    def read_bytes(self):  # root reads a mode-000 file anyway: fail as an unprivileged user would
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    code, _out, err = check_config(capsys, path)
    assert code == 2 and err == f"mptcrypt: error: cannot read config file {path}: Permission denied\n"


def test_missing(capsys, tmp_path):
    code, _out, err = check_config(capsys, tmp_path / "none.toml")
    assert code == 2 and err == f"mptcrypt: error: config file {tmp_path / 'none.toml'} not found\n"


def test_check_config_prints_what_it_sets(capsys, tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(GOOD)
    code, out, err = check_config(capsys, path)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{path}: ok",
        "  policy opportunistic on ports 22,443,5000-5100; rules, first match wins: port 22 -> required; "
        "peer 10.0.9.0/24 -> off",
        "  ciphers: public p256,x25519; symmetric chacha20; resumption off",
        f"  config: {path}",
    ]


def test_a_good_file_and_flags_over_it(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(GOOD)
    cfg = load_config(path, policy="required", queue_num=None)
    assert isinstance(cfg, Config)  # the engine is handed the whole object
    assert cfg.ports == ((22, 22), (443, 443), (5000, 5100)) and cfg.queue_num == 7 and cfg.init_rto == 1.0
    assert cfg.pub_ciphers == (PubCipher.P256, PubCipher.X25519) and cfg.sym_ciphers == (SymCipher.CHACHA20,)
    assert cfg.policy is Policy.REQUIRED and cfg.resume is False
    assert cfg.policy_for("10.0.9.7", 22) is Policy.REQUIRED and cfg.policy_for("10.0.9.7", 443) is Policy.OFF
    assert cfg.policy_for("10.0.8.7", 443) is Policy.REQUIRED
    assert describe(cfg)["rules"] == [{"policy": "required", "port": "22"}, {"policy": "off", "peer": "10.0.9.0/24"}]


def test_a_bad_flag_is_named(capsys):
    assert cli.main(["daemon", "--check-config", "/dev/null", "--ports", "0"]) == 2
    assert capsys.readouterr().err == (
        "mptcrypt: error: --ports: bad port range '0': ports go from 1 to 65535, low end first\n")


# --- SIGHUP: Daemon.reload() ---------------------------------------------------------------------------------------


class RecordingEngine:
    def __init__(self):
        self.configs = []

    def reconfigure(self, config):
        self.configs.append(config)


def test_reload_applies_a_good_file_and_keeps_the_old_on_a_bad_one(tmp_path, caplog):
    path = tmp_path / "m.toml"
    path.write_text('policy = "opportunistic"\n')
    engine = RecordingEngine()
    daemon = Daemon(load_config(path), engine=engine, loader=lambda: load_config(path))
    first = daemon.config
    path.write_text('policy = "required"\nports = "80"\n[[rule]]\nport = "22"\npolicy = "off"\n')
    caplog.set_level(logging.INFO, "mptcrypt.daemon")
    assert daemon.reload() is True
    assert engine.configs == [daemon.config] and daemon.config.policy is Policy.REQUIRED
    assert daemon.config.ports == first.ports == ()  # the rules were installed for these: kept
    assert "reload: ports changed; restart the daemon to apply that (kept the running value)" in caplog.text
    assert "reloaded configuration (policy required, 1 rule(s), ciphers x25519,p256,rsa2048 / aes128,chacha20)" \
        in caplog.text
    applied = daemon.config
    path.write_text('policy = "required"\n[[rule]]\nport = "22"\npolicy = "off"\npeers = "10.0.9.0/24"\n')
    assert daemon.reload() is False
    assert daemon.config is applied and engine.configs == [applied] and daemon.reloads == 1
    assert f"reload failed, the running configuration stays: {path}: rule 1: unknown key 'peers'" in caplog.text
    status = daemon.handle_request({"cmd": "status"})
    assert status["policy"] == "required" and status["rules"] == [{"policy": "off", "port": "22"}]
    assert status["reloads"] == 1 and status["config"] == str(path)


def test_reconfigure_reaches_new_connections_of_the_engine():
    pair = EnginePair()
    pair.eng["s"].reconfigure(DaemonConfig(pub_ciphers=(PubCipher.P256,)))
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, 100, 0, SYN, syn_options()))
    pair.send("s", segment(S_ADDR, 5000, C_ADDR, 40000, 900, 101, SYN | ACK, syn_options(ts=False)))
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, 101, 901, ACK))
    (row,) = pair.eng["s"].sessions()
    assert row["protected"] and row["pub_cipher"] == "P256"  # the client prefers x25519: the server's list chose


def test_core_config_has_no_daemon_settings():
    with pytest.raises(TypeError):
        Config(queue_num=1)  # those live in mptcrypt.daemon.config.DaemonConfig
    with pytest.raises(ConfigError):
        load_config(None, queue_num=-1)
