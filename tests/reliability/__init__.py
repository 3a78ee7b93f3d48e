"""Reliability suite: crashes, Intercom faults, races, hostile input and a short soak, each
showing that the store never loses, invents or regresses access."""
