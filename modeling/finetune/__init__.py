"""Fine-tuning and evaluation on a task, seed after seed; see README.md."""
