"""The far side of the one-command ssh mode: what runs on the far host.

:mod:`.bootstrap` (near side) builds the command ssh runs and what it writes
first; :mod:`.importer` (far side, stage 2) installs the shipped package in
memory; :mod:`.far` is the far process (detached, idle timeout, cleanup);
:mod:`.handoff` moves each ssh connection's channel into it with SCM_RIGHTS.
"""
