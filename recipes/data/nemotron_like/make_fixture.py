"""Write `personas.parquet`: a small, seeded dataset in the shape of NVIDIA's Nemotron-Personas (USA).

The fields and their categories follow that dataset's card: uuid, six persona texts (persona, professional_,
sports_, arts_, travel_, culinary_persona), cultural_background, skills_and_expertise(_list),
hobbies_and_interests(_list), career_goals_and_ambitions, sex (Male / Female), age (18+), marital_status
(never_married, married_present, separated, widowed, divorced), education_level (less_than_9th,
9th_12th_no_diploma, high_school, some_college, associates, bachelors, graduate), bachelors_field, occupation,
city, state (postal code), zipcode, country. The values are drawn here (not copied from the dataset), and not
census-faithful on purpose, so an audit has something to find. Run from anywhere:

    python recipes/data/nemotron_like/make_fixture.py
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 240
STATES = {"NY": ("New York", "100"), "WY": ("Cheyenne", "820"), "DC": ("Washington", "200")}
MARITAL = ["never_married", "married_present", "separated", "widowed", "divorced"]
EDUCATION = ["less_than_9th", "9th_12th_no_diploma", "high_school", "some_college", "associates", "bachelors",
             "graduate"]  # fmt: skip
FIELDS = ["stem", "business", "education", "arts_humanities", "stem_related"]
OCCUPATIONS = ["registered_nurse", "software_developer", "retail_salesperson", "teacher", "electrician",
               "not_in_workforce"]  # fmt: skip
HOBBIES = ["gardening", "chess", "hiking", "baking", "birdwatching", "jazz"]


def rows(rng: np.random.Generator) -> dict[str, list]:
    states = rng.choice(list(STATES), size=ROWS, p=[0.6, 0.2, 0.2])
    sex = rng.choice(["Male", "Female"], size=ROWS, p=[0.45, 0.55])
    age = rng.integers(18, 91, size=ROWS)
    marital = rng.choice(MARITAL, size=ROWS, p=[0.3, 0.45, 0.03, 0.07, 0.15])
    education = rng.choice(EDUCATION, size=ROWS, p=[0.03, 0.05, 0.25, 0.2, 0.09, 0.23, 0.15])
    out: dict[str, list] = {k: [] for k in ["uuid", "persona", "professional_persona", "sports_persona",
                                            "arts_persona", "travel_persona", "culinary_persona",
                                            "cultural_background", "skills_and_expertise",
                                            "skills_and_expertise_list", "hobbies_and_interests",
                                            "hobbies_and_interests_list", "career_goals_and_ambitions", "sex",
                                            "age", "marital_status", "education_level", "bachelors_field",
                                            "occupation", "city", "state", "zipcode", "country"]}  # fmt: skip
    for i in range(ROWS):
        state, job = str(states[i]), str(rng.choice(OCCUPATIONS))
        hobbies = [str(h) for h in rng.choice(HOBBIES, size=2, replace=False)]
        city, zip_prefix = STATES[state]
        who = f"A {age[i]}-year-old {str(sex[i]).lower()} {job.replace('_', ' ')} from {city}"
        edu = str(education[i])
        out["uuid"].append(f"{rng.integers(0, 2**63):016x}")
        out["persona"].append(f"{who} who enjoys {hobbies[0]} and {hobbies[1]}.")
        for kind in ("professional", "sports", "arts", "travel", "culinary"):
            out[f"{kind}_persona"].append(f"{who}; {kind} side: {hobbies[0]}.")
        out["cultural_background"].append(f"Grew up in {city}.")
        out["skills_and_expertise"].append(f"Skilled as a {job.replace('_', ' ')}.")
        out["skills_and_expertise_list"].append(str([job.replace("_", " ")]))
        out["hobbies_and_interests"].append(f"Enjoys {hobbies[0]} and {hobbies[1]}.")
        out["hobbies_and_interests_list"].append(str(hobbies))
        out["career_goals_and_ambitions"].append("To keep learning.")
        out["sex"].append(str(sex[i]))
        out["age"].append(int(age[i]))
        out["marital_status"].append(str(marital[i]))
        out["education_level"].append(edu)
        out["bachelors_field"].append(str(rng.choice(FIELDS)) if edu in ("bachelors", "graduate") else "")
        out["occupation"].append(job)
        out["city"].append(city)
        out["state"].append(state)
        out["zipcode"].append(f"{zip_prefix}{rng.integers(0, 100):02d}")
        out["country"].append("USA")
    return out


def main() -> None:
    table = pa.table(rows(np.random.default_rng(20250601)))
    pq.write_table(table, Path(__file__).with_name("personas.parquet"), compression="zstd")


if __name__ == "__main__":
    main()
