"""A built-in demo dataset, generated here (no third-party rows): templated instruction rows with correct answers,
some corrupted on purpose so that a selection method can be checked against known bad rows.

Columns: ``instruction``, ``input``, ``output`` (Alpaca format), ``family`` (the task family) and
``corruption`` (``none``, ``swapped``, ``truncated``, ``emptied`` or ``wrong``).

Example:
    >>> ds = make_demo_dataset(n=50, seed=0)
    >>> sorted(set(ds["corruption"])) <= ["emptied", "none", "swapped", "truncated", "wrong"]
    True
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

CORRUPTIONS = ("swapped", "truncated", "emptied", "wrong")

_WORDS = [
    "apple",
    "river",
    "mountain",
    "garden",
    "window",
    "silver",
    "planet",
    "candle",
    "forest",
    "market",
    "yellow",
    "bridge",
    "engine",
    "pencil",
    "orange",
    "rocket",
    "winter",
    "summer",
    "castle",
    "butter",
    "dragon",
    "island",
    "camera",
    "guitar",
    "ladder",
    "meadow",
    "pirate",
    "tunnel",
    "violin",
    "wizard",
]
_CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Canada": "Ottawa",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Spain": "Madrid",
    "Greece": "Athens",
    "Chile": "Santiago",
    "Poland": "Warsaw",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Cuba": "Havana",
}
_ANTONYMS = {
    "hot": "cold",
    "tall": "short",
    "fast": "slow",
    "happy": "sad",
    "early": "late",
    "open": "closed",
    "heavy": "light",
    "empty": "full",
    "strong": "weak",
    "rich": "poor",
    "loud": "quiet",
    "hard": "soft",
}
_PLURALS = {
    "child": "children",
    "mouse": "mice",
    "box": "boxes",
    "city": "cities",
    "knife": "knives",
    "tooth": "teeth",
    "person": "people",
    "leaf": "leaves",
    "bus": "buses",
    "goose": "geese",
    "hero": "heroes",
    "wolf": "wolves",
}
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

Row = tuple[str, str, str, Callable[[random.Random], str]]  # instruction, input, output, wrong-answer maker


def _num_wrong(value: int | float, fmt: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        delta = rng.choice([-3, -2, -1, 1, 2, 3, 7, 10])
        return fmt.format(value + delta)

    return make


def _text_wrong(choices: list[str], right: str, fmt: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        return fmt.format(rng.choice([c for c in choices if c != right]))

    return make


def _addition(rng: random.Random) -> Row:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    return f"What is {a} plus {b}?", "", f"{a} + {b} = {a + b}.", _num_wrong(a + b, f"{a} + {b} = {{}}.")


def _subtraction(rng: random.Random) -> Row:
    a, b = rng.randint(100, 999), rng.randint(1, 99)
    return f"Subtract {b} from {a}.", "", f"{a} - {b} = {a - b}.", _num_wrong(a - b, f"{a} - {b} = {{}}.")


def _multiplication(rng: random.Random) -> Row:
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    return f"Multiply {a} by {b}.", "", f"{a} x {b} = {a * b}.", _num_wrong(a * b, f"{a} x {b} = {{}}.")


def _division(rng: random.Random) -> Row:
    b = rng.randint(2, 12)
    q, r = rng.randint(2, 60), rng.randint(0, b - 1)
    a = b * q + r
    out = f"{a} divided by {b} is {q} with a remainder of {r}."
    return (
        f"Divide {a} by {b} and give the quotient and remainder.",
        "",
        out,
        _num_wrong(q, f"{a} divided by {b} is {{}} with a remainder of {r}."),
    )


def _km_to_m(rng: random.Random) -> Row:
    km = rng.randint(1, 90) / 2
    m = int(km * 1000)
    return (
        "Convert the distance to meters.",
        f"{km} km",
        f"{km} km is {m} meters.",
        _num_wrong(m, f"{km} km is {{}} meters."),
    )


def _hours_to_minutes(rng: random.Random) -> Row:
    h = rng.randint(1, 48)
    return (
        f"How many minutes are there in {h} hours?",
        "",
        f"There are {h * 60} minutes in {h} hours.",
        _num_wrong(h * 60, f"There are {{}} minutes in {h} hours."),
    )


def _celsius(rng: random.Random) -> Row:
    c = rng.randrange(-40, 101, 5)
    f = c * 9 // 5 + 32
    return (
        "Convert this temperature from Celsius to Fahrenheit.",
        f"{c} degrees Celsius",
        (f"{c} degrees Celsius is {f} degrees Fahrenheit."),
        _num_wrong(f, f"{c} degrees Celsius is {{}} degrees Fahrenheit."),
    )


def _reverse(rng: random.Random) -> Row:
    w = rng.choice(_WORDS)
    return (
        "Reverse the letters of the word.",
        w,
        f"The word reversed is: {w[::-1]}",
        lambda r: f"The word reversed is: {''.join(r.sample(w, len(w)))}",
    )


def _uppercase(rng: random.Random) -> Row:
    ws = " ".join(rng.sample(_WORDS, 3))
    return "Rewrite the text in upper case.", ws, ws.upper(), lambda r: ws.title()


def _sort_numbers(rng: random.Random) -> Row:
    xs = rng.sample(range(1, 100), rng.randint(4, 7))
    right = ", ".join(map(str, sorted(xs)))
    return (
        "Sort these numbers from smallest to largest.",
        ", ".join(map(str, xs)),
        right,
        lambda r: ", ".join(map(str, sorted(xs, reverse=True))),
    )


def _sort_words(rng: random.Random) -> Row:
    ws = rng.sample(_WORDS, rng.randint(3, 6))
    return (
        "Sort these words in alphabetical order.",
        ", ".join(ws),
        ", ".join(sorted(ws)),
        lambda r: ", ".join(r.sample(ws, len(ws))),
    )


def _date_diff(rng: random.Random) -> Row:
    d1 = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 1500))
    d2 = d1 + dt.timedelta(days=rng.randint(1, 400))
    days = (d2 - d1).days
    return (
        f"How many days are there between {d1.isoformat()} and {d2.isoformat()}?",
        "",
        (f"There are {days} days between {d1.isoformat()} and {d2.isoformat()}."),
        _num_wrong(days, f"There are {{}} days between {d1.isoformat()} and {d2.isoformat()}."),
    )


def _weekday(rng: random.Random) -> Row:
    d = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 700))
    right = _DAYS[d.weekday()]
    return (
        f"What day of the week was {d.isoformat()}?",
        "",
        f"{d.isoformat()} was a {right}.",
        _text_wrong(_DAYS, right, f"{d.isoformat()} was a {{}}."),
    )


def _maximum(rng: random.Random) -> Row:
    xs = rng.sample(range(1, 500), 5)
    return (
        "Find the largest number in the list.",
        str(xs),
        f"The largest number is {max(xs)}.",
        lambda r: f"The largest number is {min(xs)}.",
    )


def _sum_list(rng: random.Random) -> Row:
    xs = [rng.randint(1, 50) for _ in range(rng.randint(3, 6))]
    return (
        "Add up all the numbers.",
        " ".join(map(str, xs)),
        f"The total is {sum(xs)}.",
        _num_wrong(sum(xs), "The total is {}."),
    )


def _parity(rng: random.Random) -> Row:
    x = rng.randint(1, 10_000)
    right = "even" if x % 2 == 0 else "odd"
    return f"Is {x} even or odd?", "", f"{x} is {right}.", lambda r: f"{x} is {'odd' if right == 'even' else 'even'}."


def _vowels(rng: random.Random) -> Row:
    w = rng.choice(_WORDS)
    n = sum(ch in "aeiou" for ch in w)
    return (
        f"How many vowels are in the word '{w}'?",
        "",
        f"The word '{w}' has {n} vowels.",
        _num_wrong(n, f"The word '{w}' has {{}} vowels."),
    )


def _capital(rng: random.Random) -> Row:
    country = rng.choice(sorted(_CAPITALS))
    right = _CAPITALS[country]
    return (
        f"What is the capital of {country}?",
        "",
        f"The capital of {country} is {right}.",
        _text_wrong(list(_CAPITALS.values()), right, f"The capital of {country} is {{}}."),
    )


def _antonym(rng: random.Random) -> Row:
    w = rng.choice(sorted(_ANTONYMS))
    right = _ANTONYMS[w]
    return (
        "Give the opposite of the word.",
        w,
        f"The opposite of '{w}' is '{right}'.",
        _text_wrong(list(_ANTONYMS.values()), right, f"The opposite of '{w}' is '{{}}'."),
    )


def _plural(rng: random.Random) -> Row:
    w = rng.choice(sorted(_PLURALS))
    right = _PLURALS[w]
    return (
        f"What is the plural of '{w}'?",
        "",
        f"The plural of '{w}' is '{right}'.",
        lambda r: f"The plural of '{w}' is '{w}s'.",
    )


def _rectangle(rng: random.Random) -> Row:
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    return (
        f"A rectangle is {a} cm long and {b} cm wide. What is its area?",
        "",
        (f"The area is {a} x {b} = {a * b} square centimeters."),
        _num_wrong(a * b, f"The area is {a} x {b} = {{}} square centimeters."),
    )


def _square(rng: random.Random) -> Row:
    x = rng.randint(2, 99)
    return (
        f"What is the square of {x}?",
        "",
        f"The square of {x} is {x * x}.",
        _num_wrong(x * x, f"The square of {x} is {{}}."),
    )


def _sequence(rng: random.Random) -> Row:
    start, step = rng.randint(1, 30), rng.randint(2, 9)
    xs = [start + step * i for i in range(5)]
    nxt = start + step * 5
    return (
        "What number comes next in the sequence?",
        ", ".join(map(str, xs)),
        (f"Each number grows by {step}, so the next number is {nxt}."),
        _num_wrong(nxt, f"Each number grows by {step}, so the next number is {{}}."),
    )


def _acronym(rng: random.Random) -> Row:
    ws = rng.sample(_WORDS, 3)
    right = "".join(w[0].upper() for w in ws)
    return (
        "Make an acronym from the first letters of the words.",
        " ".join(ws),
        f"The acronym is {right}.",
        (lambda r: f"The acronym is {''.join(w[-1].upper() for w in ws)}."),
    )


def _percentage(rng: random.Random) -> Row:
    p, x = rng.choice([10, 20, 25, 50, 75]), rng.randrange(20, 1000, 20)
    v = x * p // 100
    return f"What is {p}% of {x}?", "", f"{p}% of {x} is {v}.", _num_wrong(v, f"{p}% of {x} is {{}}.")


FAMILIES: dict[str, Callable[[random.Random], Row]] = {
    "addition": _addition,
    "subtraction": _subtraction,
    "multiplication": _multiplication,
    "division": _division,
    "km_to_m": _km_to_m,
    "hours_to_minutes": _hours_to_minutes,
    "celsius_to_fahrenheit": _celsius,
    "reverse_word": _reverse,
    "uppercase": _uppercase,
    "sort_numbers": _sort_numbers,
    "sort_words": _sort_words,
    "date_difference": _date_diff,
    "weekday": _weekday,
    "maximum": _maximum,
    "sum_list": _sum_list,
    "parity": _parity,
    "count_vowels": _vowels,
    "capital_city": _capital,
    "antonym": _antonym,
    "plural": _plural,
    "rectangle_area": _rectangle,
    "square": _square,
    "next_in_sequence": _sequence,
    "acronym": _acronym,
    "percentage": _percentage,
}


def make_demo_dataset(n: int = 1000, seed: int = 0, corrupt_fraction: float = 0.15) -> Any:
    """Build the demo dataset: ``n`` rows over every family, ``corrupt_fraction`` of them corrupted on purpose.

    Corruptions, in equal shares: ``swapped`` (another family's response), ``truncated`` (the response cut to
    its first third), ``emptied`` (the response removed) and ``wrong`` (a fluent but incorrect answer).
    """
    from datasets import Dataset

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= corrupt_fraction < 1.0:
        raise ValueError(f"corrupt_fraction must be in [0, 1), got {corrupt_fraction}")
    rng = random.Random(seed)
    names = list(FAMILIES)
    rows: list[dict[str, str]] = []
    wrong_makers = []
    for i in range(n):
        family = names[i % len(names)]
        instruction, inp, output, wrong = FAMILIES[family](rng)
        rows.append(
            {"instruction": instruction, "input": inp, "output": output, "family": family, "corruption": "none"}
        )
        wrong_makers.append(wrong)
    order = list(range(n))
    rng.shuffle(order)
    rows = [rows[i] for i in order]
    wrong_makers = [wrong_makers[i] for i in order]
    n_bad = int(round(n * corrupt_fraction))
    bad = rng.sample(range(n), n_bad)
    originals = [r["output"] for r in rows]
    for j, i in enumerate(bad):
        kind = CORRUPTIONS[j % len(CORRUPTIONS)]
        row = rows[i]
        if kind == "swapped":
            others = [k for k in range(n) if rows[k]["family"] != row["family"]]
            if not others:
                continue
            row["output"] = originals[rng.choice(others)]
        elif kind == "truncated":
            text = row["output"]
            row["output"] = text[: max(1, len(text) // 3)]
        elif kind == "emptied":
            row["output"] = ""
        else:
            row["output"] = wrong_makers[i](rng)
            if row["output"] == originals[i]:
                continue
        row["corruption"] = kind
    return Dataset.from_list(rows)
