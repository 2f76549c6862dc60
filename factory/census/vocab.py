"""The attribute vocabulary of a synthetic person: category names, in order, for every dimension.

The joint is fitted over *fine* age bands (the common refinement of every census table's age groups for adults);
each person's single-year age is drawn inside its band afterwards. Race/ethnicity is exclusive: "Hispanic or
Latino" (any race) or a non-Hispanic race group, so nobody is counted twice (the study's B01001 iterations
double-counted Hispanics).
"""

from __future__ import annotations

import numpy as np

AGE_BANDS = [
    (18, 19),
    (20, 24),
    (25, 29),
    (30, 34),
    (35, 39),
    (40, 44),
    (45, 49),
    (50, 54),
    (55, 59),
    (60, 64),
    (65, 69),
    (70, 74),
    (75, 79),
    (80, 84),
    (85, 99),
]
MAX_AGE = 99


def band_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= MAX_AGE else f"{lo}-{hi}"


AGE = [band_label(lo, hi) for lo, hi in AGE_BANDS]
SEX = ["Male", "Female"]
RACE_ETHNICITY = [
    "Hispanic or Latino",
    "White",
    "Black or African American",
    "American Indian and Alaska Native",
    "Asian",
    "Native Hawaiian and Other Pacific Islander",
    "Some other race",
    "Two or more races",
]  # all but the first are non-Hispanic
RACE = RACE_ETHNICITY[1:]  # race alone (any ethnicity), for the `race` column
EDUCATION = [
    "Less than 9th grade",
    "9th to 12th grade, no diploma",
    "High school graduate (includes equivalency)",
    "Some college, no degree",
    "Associate's degree",
    "Bachelor's degree",
    "Graduate or professional degree",
]
MARITAL = ["Never married", "Now married, except separated", "Separated", "Widowed", "Divorced"]
EMPLOYMENT = ["Employed", "Unemployed", "Armed Forces", "Not in labor force"]
NATIVITY = ["Native", "Naturalized U.S. citizen", "Not a U.S. citizen"]

CORE_DIMS = {
    "age_band": AGE,
    "sex": SEX,
    "race_ethnicity": RACE_ETHNICITY,
    "education": EDUCATION,
    "marital_status": MARITAL,
    "employment_status": EMPLOYMENT,
    "nativity": NATIVITY,
}

NONE = "None"  # the category of an attribute that does not apply (occupation of someone not employed)

OCCUPATION = [
    "Management",
    "Business and financial operations",
    "Computer and mathematical",
    "Architecture and engineering",
    "Life, physical, and social science",
    "Community and social service",
    "Legal",
    "Educational instruction and library",
    "Arts, design, entertainment, sports, and media",
    "Health diagnosing and treating practitioners and other technical",
    "Health technologists and technicians",
    "Healthcare support",
    "Firefighting and prevention, and other protective service",
    "Law enforcement",
    "Food preparation and serving related",
    "Building and grounds cleaning and maintenance",
    "Personal care and service",
    "Sales and related",
    "Office and administrative support",
    "Farming, fishing, and forestry",
    "Construction and extraction",
    "Installation, maintenance, and repair",
    "Production",
    "Transportation",
    "Material moving",
]
INDUSTRY = [
    "Agriculture, forestry, fishing and hunting",
    "Mining, quarrying, and oil and gas extraction",
    "Construction",
    "Manufacturing",
    "Wholesale trade",
    "Retail trade",
    "Transportation and warehousing",
    "Utilities",
    "Information",
    "Finance and insurance",
    "Real estate and rental and leasing",
    "Professional, scientific, and technical services",
    "Management of companies and enterprises",
    "Administrative and support and waste management services",
    "Educational services",
    "Health care and social assistance",
    "Arts, entertainment, and recreation",
    "Accommodation and food services",
    "Other services, except public administration",
    "Public administration",
]
CLASS_OF_WORKER = [
    "Private wage and salary worker",
    "Government worker",
    "Self-employed in own not incorporated business",
    "Unpaid family worker",
]
HEALTH_INSURANCE = ["Insured", "Uninsured"]
VETERAN = ["Veteran", "Nonveteran"]
LANGUAGE = [
    "English only",
    "Spanish",
    "Other Indo-European languages",
    "Asian and Pacific Island languages",
    "Other languages",
]
ENGLISH = ["Only English", "Very well", "Less than very well"]
RELATIONSHIP = [
    "Householder",
    "Spouse",
    "Unmarried partner",
    "Child",
    "Other relative",
    "Nonrelative",
    "Group quarters",
]
HOUSEHOLD_TYPE = [
    "Married-couple family",
    "Male householder, no spouse, family",
    "Female householder, no spouse, family",
    "Nonfamily, living alone",
    "Nonfamily, not alone",
    "Group quarters",
]
HOUSEHOLD_INCOME = [
    "Less than $10,000",
    "$10,000 to $14,999",
    "$15,000 to $24,999",
    "$25,000 to $34,999",
    "$35,000 to $49,999",
    "$50,000 to $74,999",
    "$75,000 to $99,999",
    "$100,000 to $149,999",
    "$150,000 to $199,999",
    "$200,000 or more",
]
ENROLLMENT = ["Not enrolled", "High school (grades 9-12)", "College or graduate school"]

# Earliest age at which a degree is plausible: single-year ages are drawn at or above it (no 18-year-old with a
# graduate degree, whatever the 18-24 band says).
MIN_AGE_FOR_EDUCATION = {"Associate's degree": 19, "Bachelor's degree": 21, "Graduate or professional degree": 22}


def band_map(groups: list[tuple[int, int]], lo_age: int = 18) -> np.ndarray:
    """Fine band -> index of the coarser age group containing it (-1 if none). Groups must align with fine bands;
    a group starting below 18 (e.g. 15-19) covers the fine bands from 18 on."""
    out = np.full(len(AGE_BANDS), -1, dtype=np.int64)
    for i, (lo, hi) in enumerate(AGE_BANDS):
        for g, (glo, ghi) in enumerate(groups):
            if max(glo, lo_age) <= lo and hi <= ghi:
                out[i] = g
    return out


def age_fraction_matrix(groups: list[tuple[int, int]], weights: np.ndarray | None = None) -> np.ndarray:
    """(fine bands x groups) share of each fine band's single-year ages falling in each group, for age groups that
    cut through fine bands (S2701's 19-25, 26-34). `weights` are single-year weights (default: uniform)."""
    w = np.ones(MAX_AGE + 1) if weights is None else weights
    out = np.zeros((len(AGE_BANDS), len(groups)))
    for i, (lo, hi) in enumerate(AGE_BANDS):
        total = w[lo : hi + 1].sum()
        for g, (glo, ghi) in enumerate(groups):
            a, b = max(lo, glo), min(hi, ghi)
            if a <= b:
                out[i, g] = w[a : b + 1].sum() / total
    return out


def single_year_weights() -> np.ndarray:
    """Relative weight of each single year of age inside its fine band: flat, except a decline past 85 (the
    85+ band holds few 95-year-olds)."""
    w = np.ones(MAX_AGE + 1)
    w[85:] = 0.8 ** np.arange(MAX_AGE + 1 - 85)
    return w
