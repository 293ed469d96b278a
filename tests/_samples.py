"""Names of OpenFace's sample images in ``shared/data/openface-samples`` that
OpenFace's reference detections (``reference/openface-samples/*/detect``) cover."""

SAMPLE_IMAGES = [
    "multi_face_img.png",
    "sample1.jpg",
    "sample2.jpg",
    "sample3.jpg",
    "sample4.jpg",
    "sample5.jpg",
    "sample6.jpg",
    "sample3_16bit_gray.png",
    "sample3_16bit_rgb.png",
]
