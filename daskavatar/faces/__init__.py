"""Face analysis of the map stage: detection, 68 landmarks, head pose and the aligned crop."""
