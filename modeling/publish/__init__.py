"""Model cards and pushes to the Hugging Face Hub; see README.md."""
