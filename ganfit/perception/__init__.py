"""Perception: face detection, 68 landmarks, landmark files."""
from .detect import Detection, FaceDetector, make_detector, select_face
from .landmark_file import read_landmarks, write_pts

__all__ = ["Detection", "FaceDetector", "make_detector", "select_face", "read_landmarks", "write_pts"]
