"""Tools around the codecs: the option-budget table generator and a pcap reader (not on the packet path)."""
