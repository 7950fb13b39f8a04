"""From source files to packed rows; see README.md."""
