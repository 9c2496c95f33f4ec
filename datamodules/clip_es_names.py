"""CLIP-ES's prompt vocabulary (its `clip_text.py`): the class names it puts in "a clean
origami {}." (`new_class_names`, in the datasets' class order) and its background words.
A name may hold commas ("person with clothes,people,human"): it is one prompt, not synonyms."""

VOC_NAMES = [
    "aeroplane", "bicycle", "bird avian", "boat", "bottle", "bus", "car", "cat", "chair seat", "cow",
    "diningtable", "dog", "horse", "motorbike", "person with clothes,people,human", "pottedplant", "sheep",
    "sofa", "train", "tvmonitor screen",
]  # fmt: skip

VOC_BACKGROUND = [
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea", "railway",
    "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock", "street", "valley",
    "bridge", "sign",
]  # fmt: skip

COCO_NAMES = [
    "person with clothes,people,human", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird avian", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack,bag", "umbrella,parasol", "handbag,purse",
    "necktie", "suitcase", "frisbee", "skis", "sknowboard", "sports ball", "kite", "baseball bat", "glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "dessertspoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair seat", "sofa", "pottedplant", "bed", "diningtable", "toilet", "tvmonitor screen", "laptop", "mouse",
    "remote control", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hairdrier,blowdrier", "toothbrush",
]  # fmt: skip

COCO_BACKGROUND = [w for w in VOC_BACKGROUND if w not in ("keyboard", "sign")]

# box_threshold: `scoremap2bbox`'s threshold in generate_cams_voc12.py (0.4) and _coco14.py (0.7)
RELEASES = {"voc": {"names": VOC_NAMES, "background": VOC_BACKGROUND, "box_threshold": 0.4},
            "coco": {"names": COCO_NAMES, "background": COCO_BACKGROUND, "box_threshold": 0.7}}  # fmt: skip
