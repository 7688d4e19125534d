"""Regenerate data/raw.csv (not a stage: raw.csv is the committed input).

    python make_raw_csv.py

Synthetic house prices: price_k = 2.5 * area_m2 - 1.2 * age_years + 40 + noise.
A few rows are deliberately dirty (blank fields, text, missing columns) so the
`clean` stage has something to do.
"""

import csv
import random

ROWS = 200
DIRTY = {
    17: ["", "12", "190.5"],
    42: ["88", "n/a", "231.0"],
    63: ["abc", "5", "120.0"],
    91: ["104", "30"],
    118: ["", "", ""],
    140: ["75.5", "7", "cheap"],
    166: ["NaN", "3", "210.0"],
    187: ["120", " ", "300.2"],
}


def main() -> None:
    rng = random.Random(7)
    with open("data/raw.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["area_m2", "age_years", "price_k"])
        for i in range(ROWS):
            if i in DIRTY:
                writer.writerow(DIRTY[i])
                continue
            area = rng.uniform(30, 160)
            age = rng.randint(0, 60)
            price = 2.5 * area - 1.2 * age + 40 + rng.gauss(0, 15)
            writer.writerow([f"{area:.1f}", age, f"{price:.1f}"])


if __name__ == "__main__":
    main()
