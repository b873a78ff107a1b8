"""The bundled demo (python -m target_pinterest_audiences.demo)."""
