"""Deploy: one self-contained bundle folder per artifact, with its runner."""
