"""Where the registry lives: store Protocols, the SQLite and Redis backends, the snapshot cache."""
