"""A simulated Roo Code extension host: the protocol of Roo's IpcServer + API with a scripted agent.

Used as the extension host when no VS Code exists (tests, CI, dry runs of a suite). See
docs/simulator.md for the script format and the engine differences it reproduces.
"""
