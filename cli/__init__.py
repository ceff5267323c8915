"""The tensor-dropout command line: a thin Click layer over dropout_core."""
