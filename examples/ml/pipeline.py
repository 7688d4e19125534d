"""A small house-price model, standard library only.

    clean     data/raw.csv                 -> data/clean.csv
    train     data/clean.csv               -> model.json, loss.csv (plot)
    evaluate  data/clean.csv, model.json   -> metrics.json (metric)

Pivot fingerprints each stage's code together with the helpers and constants
it reaches, so which stage re-runs depends on which helper you edit:

    parse_row             -> clean
    split, predict, mse   -> train and evaluate
    standardize           -> train
    TOLERANCE, rmse       -> evaluate
"""

import csv
import json
import math

from pydantic import BaseModel

from pivot import Metric, Plot, stage

FEATURES = ["area_m2", "age_years"]
TARGET = "price_k"
TEST_EVERY = 5  # every 5th clean row is held out for evaluation
TOLERANCE = 0.10  # a prediction "hits" when its relative error is at most this


class TrainParams(BaseModel):
    learning_rate: float = 0.01
    epochs: int = 100


# --- helpers -----------------------------------------------------------------


def parse_row(row: dict[str, str]) -> dict[str, float] | None:
    """Return the row as floats, or None when any field is blank or not a number."""
    parsed = {}
    for column in [*FEATURES, TARGET]:
        text = (row.get(column) or "").strip()
        try:
            value = float(text)
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        parsed[column] = value
    return parsed


def read_rows(path: str) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def split(rows: list[dict[str, float]]) -> tuple[list, list]:
    """Deterministic train/test split by position."""
    train_rows = [r for i, r in enumerate(rows) if i % TEST_EVERY != 0]
    test_rows = [r for i, r in enumerate(rows) if i % TEST_EVERY == 0]
    return train_rows, test_rows


def standardize(rows: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each feature, so gradient descent behaves."""
    scales = {}
    for column in FEATURES:
        values = [r[column] for r in rows]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
        scales[column] = (mean, std)
    return scales


def predict(model: dict, row: dict[str, float]) -> float:
    total = model["bias"]
    for column in FEATURES:
        mean, std = model["scales"][column]
        total += model["weights"][column] * (row[column] - mean) / std
    return total


def mse(model: dict, rows: list[dict[str, float]]) -> float:
    return sum((predict(model, r) - r[TARGET]) ** 2 for r in rows) / len(rows)


def rmse(model: dict, rows: list[dict[str, float]]) -> float:
    return math.sqrt(mse(model, rows))


def write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


# --- stages ------------------------------------------------------------------


@stage(deps=["data/raw.csv"], outs=["data/clean.csv"])
def clean():
    with open("data/raw.csv", newline="") as f:
        raw = list(csv.DictReader(f))
    rows = [r for r in map(parse_row, raw) if r is not None]
    with open("data/clean.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FEATURES, TARGET], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"clean: kept {len(rows)} of {len(raw)} rows")


@stage(
    deps=["data/clean.csv"],
    outs=["model.json", Plot("loss.csv", x="epoch", y="loss")],
    params=TrainParams,
)
def train(params: TrainParams):
    rows, _ = split(read_rows("data/clean.csv"))
    model = {"bias": 0.0, "weights": dict.fromkeys(FEATURES, 0.0), "scales": standardize(rows)}
    history = []
    for epoch in range(1, params.epochs + 1):
        grad_bias = 0.0
        grad_w = dict.fromkeys(FEATURES, 0.0)
        for r in rows:
            error = predict(model, r) - r[TARGET]
            grad_bias += error
            for column in FEATURES:
                mean, std = model["scales"][column]
                grad_w[column] += error * (r[column] - mean) / std
        model["bias"] -= params.learning_rate * 2 * grad_bias / len(rows)
        for column in FEATURES:
            model["weights"][column] -= params.learning_rate * 2 * grad_w[column] / len(rows)
        history.append((epoch, mse(model, rows)))

    write_json("model.json", model)
    with open("loss.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["epoch", "loss"])
        writer.writerows((epoch, f"{loss:.4f}") for epoch, loss in history)
    print(f"train: {params.epochs} epochs, final loss {history[-1][1]:.2f}")


@stage(deps=["data/clean.csv", "model.json"], outs=[Metric("metrics.json")])
def evaluate():
    _, test = split(read_rows("data/clean.csv"))
    with open("model.json") as f:
        model = json.load(f)
    hits = sum(abs(predict(model, r) - r[TARGET]) <= TOLERANCE * abs(r[TARGET]) for r in test)
    write_json(
        "metrics.json",
        {
            "rmse": round(rmse(model, test), 3),
            "within_tolerance": round(hits / len(test), 3),
            "test_rows": len(test),
        },
    )
