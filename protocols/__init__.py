"""libp2p wire protocols of p2pico: pure codecs and state machines, no I/O."""
