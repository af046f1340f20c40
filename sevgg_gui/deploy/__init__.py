"""Deployment: ONNX export (``sevgg export``). Import-free so the CLI's parser stays instant."""
