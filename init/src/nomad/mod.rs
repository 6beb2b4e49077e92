//! Client for the Nomad HTTP API (base URL passed in).
