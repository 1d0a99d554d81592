//! pcap and pcapng files, read through libpcap.
