//! Client fingerprints: JA3 (string + MD5) and JA4 (client only; BSD-licensed part of JA4+).
