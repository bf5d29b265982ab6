"""Audio in: sources, the capture ring buffer, resampling and the voice-activity gate."""
