"""The failure-mode catalogue: how a mesh fails, who owns each way, what
detects it and what to do, bound to the mesh's nodes and checks
(``failure_modes.yaml`` beside the catalog), with its coverage."""
