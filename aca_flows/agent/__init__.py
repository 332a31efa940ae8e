"""Agent: executes one task: prompt, tool loop, verification, subtask proposals."""
