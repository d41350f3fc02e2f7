"""The adapters that ship with esb, one package each."""
