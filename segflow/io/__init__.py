"""Reading and writing images, raw datasets and artifacts."""
