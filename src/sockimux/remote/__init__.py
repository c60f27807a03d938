"""The one-command ssh mode's remote half (docs/SSH-FAR.md tells the design).

Near side: :mod:`.sshcmd` (the ssh command line, ControlMaster defeated),
:mod:`.bootstrap` (the loader and the package it ships), :mod:`.near` (one
ssh connection up to a connected socket).  Far side: :mod:`.importer`
(stage 2: the shipped package, imported from memory), :mod:`.far` (the
detached far process: private socket, idle timeout, clean-up),
:mod:`.handoff` (each ssh channel's descriptors passed in with SCM_RIGHTS),
:mod:`.adopt` and :mod:`.pipepair` (a channel, socket or two pipes, into a
protocol, as the runtime adopts connections).
"""
