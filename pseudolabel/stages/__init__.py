"""Pipeline stages: each reads what earlier stages wrote and writes its own outputs."""
