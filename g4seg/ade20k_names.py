"""ADE20K SceneParsing's 150 class names with their synonyms, as its `objectInfo150.csv`
writes them (WordNet synsets, ", " between synonyms), in label-map order.

Why here: ADE20K checkpoints spell their labels three ways: the first synonym only
(transformers' ade20k-id2label.json: "television receiver"), the whole line ("television
receiver, television, ..."), the same with ";" between synonyms, or CSAIL's `object150_info.csv`, where both the spaces and the
commas became ";" ("television;television;receiver;..."), so that the words of a name can no
longer be told from its synonyms. This table restores each spelling to the synonyms meant.
"""

from __future__ import annotations

import functools

SYNONYMS: tuple[tuple[str, ...], ...] = tuple(tuple(line.split(", ")) for line in (
    "wall", "building, edifice", "sky", "floor, flooring", "tree", "ceiling", "road, route", "bed",
    "windowpane, window", "grass", "cabinet", "sidewalk, pavement",
    "person, individual, someone, somebody, mortal, soul", "earth, ground", "door, double door", "table",
    "mountain, mount", "plant, flora, plant life", "curtain, drape, drapery, mantle, pall", "chair",
    "car, auto, automobile, machine, motorcar", "water", "painting, picture", "sofa, couch, lounge", "shelf",
    "house", "sea", "mirror", "rug, carpet, carpeting", "field", "armchair", "seat", "fence, fencing", "desk",
    "rock, stone", "wardrobe, closet, press", "lamp", "bathtub, bathing tub, bath, tub", "railing, rail",
    "cushion", "base, pedestal, stand", "box", "column, pillar", "signboard, sign",
    "chest of drawers, chest, bureau, dresser", "counter", "sand", "sink", "skyscraper",
    "fireplace, hearth, open fireplace", "refrigerator, icebox", "grandstand, covered stand", "path",
    "stairs, steps", "runway", "case, display case, showcase, vitrine", "pool table, billiard table, snooker table",
    "pillow", "screen door, screen", "stairway, staircase", "river", "bridge, span", "bookcase", "blind, screen",
    "coffee table, cocktail table", "toilet, can, commode, crapper, pot, potty, stool, throne", "flower", "book",
    "hill", "bench", "countertop", "stove, kitchen stove, range, kitchen range, cooking stove", "palm, palm tree",
    "kitchen island", "computer, computing machine, computing device, data processor, electronic computer, "
    "information processing system", "swivel chair", "boat", "bar", "arcade machine",
    "hovel, hut, hutch, shack, shanty", "bus, autobus, coach, charabanc, double-decker, jitney, motorbus, "
    "motorcoach, omnibus, passenger vehicle", "towel", "light, light source", "truck, motortruck", "tower",
    "chandelier, pendant, pendent", "awning, sunshade, sunblind", "streetlight, street lamp",
    "booth, cubicle, stall, kiosk", "television receiver, television, television set, tv, tv set, idiot box, "
    "boob tube, telly, goggle box", "airplane, aeroplane, plane", "dirt track",
    "apparel, wearing apparel, dress, clothes", "pole", "land, ground, soil",
    "bannister, banister, balustrade, balusters, handrail", "escalator, moving staircase, moving stairway",
    "ottoman, pouf, pouffe, puff, hassock", "bottle", "buffet, counter, sideboard",
    "poster, posting, placard, notice, bill, card", "stage", "van", "ship", "fountain",
    "conveyer belt, conveyor belt, conveyer, conveyor, transporter", "canopy",
    "washer, automatic washer, washing machine", "plaything, toy", "swimming pool, swimming bath, natatorium",
    "stool", "barrel, cask", "basket, handbasket", "waterfall, falls", "tent, collapsible shelter", "bag",
    "minibike, motorbike", "cradle", "oven", "ball", "food, solid food", "step, stair", "tank, storage tank",
    "trade name, brand name, brand, marque", "microwave, microwave oven", "pot, flowerpot",
    "animal, animate being, beast, brute, creature, fauna", "bicycle, bike, wheel, cycle", "lake",
    "dishwasher, dish washer, dishwashing machine", "screen, silver screen, projection screen", "blanket, cover",
    "sculpture", "hood, exhaust hood", "sconce", "vase", "traffic light, traffic signal, stoplight", "tray",
    "ashcan, trash can, garbage can, wastebin, ash bin, ash-bin, ashbin, dustbin, trash barrel, trash bin", "fan",
    "pier, wharf, wharfage, dock", "crt screen", "plate", "monitor, monitoring device",
    "bulletin board, notice board", "shower", "radiator", "glass, drinking glass", "clock", "flag",
))  # fmt: skip

SHORT_NAMES: tuple[str, ...] = tuple(s[0] for s in SYNONYMS)

# CSAIL's file orders one line differently ("television, television receiver, ...").
_CSAIL_ORDER = {"television;television;receiver;television;set;tv;tv;set;idiot;box;boob;tube;telly;goggle;box": 89}


@functools.cache
def _spellings() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for synonyms in SYNONYMS:
        whole = ", ".join(synonyms)
        for spelling in (synonyms[0], whole, ";".join(synonyms), whole.replace(", ", ";").replace(" ", ";")):
            table.setdefault(spelling.lower(), synonyms)
    for spelling, index in _CSAIL_ORDER.items():
        table[spelling] = SYNONYMS[index]
    return table


def ade20k_synonyms(label: str) -> tuple[str, ...] | None:
    """The synonyms an ADE20K label means in any of its three spellings; None for other labels."""
    return _spellings().get(label.strip().lower())
