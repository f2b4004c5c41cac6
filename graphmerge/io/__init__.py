"""Model I/O: lazy folder reading, tensor digests, layout detection, atomic HF saving, vocab alignment.

Pure library code: no knowledge of graphs, caches or the CLI. Import the submodules directly
(`graphmerge.io.folder`, `.layout`, `.save`, `.vocab`) so that importing the package stays cheap.
"""
