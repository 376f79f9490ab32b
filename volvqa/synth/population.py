"""Who the phantoms are: organ sizes, densities, contrast phase, field of
view and lesion burden drawn from published adult distributions, so that
numeric answers spread the way they do in real datasets and every clinical
rule has cases on both sides of its threshold.

Each figure below has its source in ``SOURCES``. Volumes are drawn
log-normal around the sex-specific means of Geraghty et al. with the spread
of Kim et al.'s population reference intervals; pathological tails
(hepatomegaly, splenomegaly grades, enlarged kidneys and pancreas,
steatosis, pancreatic fat) are drawn at stated rates on top. Attenuation is
unenhanced (Lamba, Kodama), then raised per organ by the phase's
enhancement (Bae). A draw is a plain dict; ``volvqa.synth.phantom`` paints
it and ``volvqa.synth.dataset`` adds the lesions it asks for.
"""
from __future__ import annotations

import numpy as np

SOURCES = {
    "organ_volumes": "Geraghty EM, Boone JM, McGahan JP, Jain K. Normal organ volume assessment from abdominal "
                     "CT. Abdom Imaging 2004;29:482-490 (means, female / male: liver 1411 / 1710 ml, spleen "
                     "180 / 238 ml, kidney 157 / 193 ml, pancreas 64 / 87 ml)",
    "volume_spread": "Kim DW, Ha J, Lee SS et al. Population-based and personalized reference intervals for "
                     "liver and spleen volumes in healthy individuals and those with viral hepatitis. Radiology "
                     "(2,989 liver donors; central 95%: liver 825-1700 ml, spleen 81-322 ml, i.e. log-SD 0.18 "
                     "and 0.35)",
    "splenomegaly": "Bezerra AS et al. AJR 2005;184:1510-1513 (> 314.5 ml; grades at 500 and 800 ml)",
    "kidney_length": "Emamian SA et al. AJR 1993;160:83-86 (mean 11.2 cm, SD about 0.9 cm; > 13 cm enlarged)",
    "unenhanced_hu": "Lamba R et al. AJR 2014;203:1013-1020; Kodama Y et al. AJR 2007;188:1307-1312 (liver "
                     "55-65 HU, spleen 45-50, pancreas 35-50, kidney 30-35 on unenhanced CT; steatosis lowers "
                     "the liver below the spleen)",
    "pancreatic_fat": "Kim SY et al. Radiology 2014;271:104-112 (P/S ratio < 0.70)",
    "enhancement": "Bae KT. Intravenous contrast medium administration and scan timing at CT. Radiology "
                   "2010;256:32-61 (aorta 250-350 HU in the late arterial phase; hepatic enhancement >= 50 HU "
                   "in the portal venous phase; pancreas peaks in the late arterial / pancreatic phase, the "
                   "renal cortex in the corticomedullary phase)",
    "lesion_burden": "Heavy-tailed counts and 5 mm - 12 cm sizes, as public lesion annotations have them (LiTS: "
                     "Bilic P et al., Med Image Anal 2023;84:102680, livers from no tumour to dozens; KiTS: "
                     "Heller N et al., Med Image Anal 2021;67:101821). The rates here are volvqa's choice, not "
                     "epidemiology: enough of every kind for every question on a 100-case demo",
}

#: Contrast phases of the demo population and their shares.
PHASE_SHARES = {"non-contrast": 0.45, "arterial": 0.2, "portal venous": 0.35}

#: Enhancement over the unenhanced value (HU, uniform ranges) by phase and tissue (Bae 2010, typical values).
ENHANCEMENT_HU = {
    "arterial": {"artery": (200, 300), "portal": (40, 90), "ivc": (10, 40), "liver": (10, 25), "spleen": (40, 80),
                 "pancreas": (60, 90), "kidney": (100, 150), "muscle": (5, 15), "bowel_wall": (20, 40)},
    "portal venous": {"artery": (110, 160), "portal": (130, 180), "ivc": (80, 130), "liver": (45, 65),
                      "spleen": (60, 80), "pancreas": (45, 70), "kidney": (100, 140), "muscle": (10, 20),
                      "bowel_wall": (30, 50)},
}


def _lognormal(rng, mean: float, log_sd: float) -> float:
    """A log-normal draw whose mean (not median) is ``mean``."""
    mu = np.log(mean) - log_sd ** 2 / 2
    return float(np.exp(rng.normal(mu, log_sd)))


def draw_case(rng: np.random.Generator) -> dict:
    """One adult: sex, phase, organ volumes (ml) and lengths (mm), unenhanced HU, enhancement, body and field of
    view. Pathological tails are tagged in ``tails`` (what was drawn on purpose, for tests and the card)."""
    u = rng.uniform
    sex = "male" if rng.random() < 0.5 else "female"
    m = sex == "male"
    tails: list[str] = []
    liver_ml = _lognormal(rng, 1710.0 if m else 1411.0, 0.18)
    if rng.random() < 0.12:
        liver_ml *= u(1.25, 1.7)
        tails.append("hepatomegaly")
    # Spleen: the population's spread, plus a splenomegaly tail across Bezerra's grades.
    spleen_ml = _lognormal(rng, 238.0 if m else 180.0, 0.35)
    if rng.random() < 0.22:
        spleen_ml = float(rng.choice([u(340, 490), u(520, 780), u(830, 1100)], p=[0.45, 0.35, 0.2]))
        tails.append("splenomegaly")
    kidney_len = float(np.clip(rng.normal(112.0, 9.0), 88.0, 128.0))
    big_kidneys = rng.random() < 0.1
    if big_kidneys:
        kidney_len = u(138.0, 152.0)
        tails.append("enlarged kidneys")
    pancreas_scale = float(np.clip(rng.normal(1.0 if m else 0.9, 0.12), 0.65, 1.3))
    if rng.random() < 0.1:
        pancreas_scale = u(1.3, 1.45)
        tails.append("large pancreas")
    # Unenhanced attenuation; steatosis and pancreatic fat as tails spanning their grades.
    hu = {"liver": float(rng.normal(58.0, 4.5)), "spleen": float(rng.normal(47.0, 3.0)),
          "pancreas": float(rng.normal(42.0, 5.0)), "kidney": float(rng.normal(32.0, 3.0))}
    if rng.random() < 0.3:
        hu["liver"] = u(12.0, 56.0)           # mild, moderate and severe steatosis (Kodama bands)
        tails.append("steatosis")
    if rng.random() < 0.22:
        hu["pancreas"] = u(2.0, 31.0)         # P/S below 0.70
        tails.append("fatty pancreas")
    _keep_clear(hu)
    phase = str(rng.choice(list(PHASE_SHARES), p=list(PHASE_SHARES.values())))
    enh = {k: 0.0 for k in ("artery", "portal", "ivc", "liver", "spleen", "pancreas", "kidney", "muscle",
                            "bowel_wall")}
    if phase in ENHANCEMENT_HU:
        enh = {k: float(u(*r)) for k, r in ENHANCEMENT_HU[phase].items()}
    # Body habitus and field of view: one scan in five starts or stops higher or lower, cutting the liver
    # dome or the kidneys' lower poles, as real scans do.
    z_shift = float(u(-40.0, 40.0)) if rng.random() < 0.2 else 0.0
    return {"sex": sex, "phase": phase, "liver_ml": liver_ml, "spleen_ml": spleen_ml,
            "kidney_length_mm": kidney_len, "enlarged_kidneys": big_kidneys, "pancreas_scale": pancreas_scale,
            "gallbladder_ml": float(u(12.0, 70.0)), "unenhanced_hu": hu, "enhancement_hu": enh,
            "body_scale": float(u(0.92, 1.1)), "subcutaneous_fat_mm": float(u(6.0, 36.0)), "z_shift_mm": z_shift,
            "tails": tails}


def _keep_clear(hu: dict) -> None:
    """Keep the drawn unenhanced values clear of the rules' thresholds (liver/spleen 1.0, pancreas/spleen
    0.70 by 8%; the Kodama liver bands at 39, 51 and 58 HU by 2 HU), so a phantom's truth is decisive: blur
    at organ edges and noise move a measured mean by 1-3 HU, which must not flip the answer."""
    sp = hu["spleen"]
    banned = sorted([(e - 2.0, e + 2.0) for e in (39.0, 51.0, 58.0)] + [(sp * 0.92, sp * 1.08)])
    merged: list[list[float]] = []
    for lo, hi in banned:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    for lo, hi in merged:
        if lo < hu["liver"] < hi:
            hu["liver"] = lo if hu["liver"] - lo < hi - hu["liver"] else hi
    # The pancreas is small: edge blur lowers its measured mean 3-8 HU against the spleen's 2-3, so the
    # measured P/S sits up to ~0.05 below the drawn one; the gap is kept wider above the threshold.
    ps = hu["pancreas"] / sp
    if 0.64 < ps < 0.80:
        ps = 0.64 if ps - 0.64 < 0.80 - ps else 0.80
    hu["pancreas"] = sp * ps


def lesion_count(rng: np.random.Generator, organ: str) -> int:
    """Lesions in one organ: none for most organs in most cases, a heavy tail for the liver (up to 18)."""
    p_none = {"liver": 0.38, "kidney": 0.45, "pancreas": 0.5, "spleen": 0.85, "colon": 0.8}[organ]
    if rng.random() < p_none:
        return 0
    if organ == "liver":
        return int(min(1 + rng.negative_binomial(0.55, 0.17), 18))
    if organ == "kidney":
        return int(min(1 + rng.negative_binomial(0.8, 0.45), 6))
    return int(min(1 + rng.negative_binomial(1.0, 0.7), 3))


#: Lesion diameters (mm): log-normal median and log-SD, clipped to the range.
LESION_SIZE_MM = {"liver": (16.0, 0.75, 5.0, 120.0), "kidney": (15.0, 0.65, 5.0, 70.0),
                  "pancreas": (18.0, 0.5, 5.0, 45.0), "spleen": (12.0, 0.5, 5.0, 40.0),
                  "colon": (20.0, 0.35, 10.0, 45.0)}


def lesion_diameter_mm(rng: np.random.Generator, organ: str) -> float:
    med, sd, lo, hi = LESION_SIZE_MM[organ]
    return float(np.clip(np.exp(rng.normal(np.log(med), sd)), lo, hi))


def kidney_cyst_hu(rng: np.random.Generator) -> float:
    """Simple (-5 to 18 HU), indeterminate (22-65 HU) and hyperattenuating (72-90 HU) cysts, so every
    Bosniak unenhanced-CT class of the renal mass rule has cases."""
    r = rng.random()
    if r < 0.72:
        return float(rng.uniform(-5.0, 18.0))
    if r < 0.9:
        return float(rng.uniform(22.0, 65.0))
    return float(rng.uniform(72.0, 90.0))
