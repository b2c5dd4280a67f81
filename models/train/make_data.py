#!/usr/bin/env python3
"""Synthetic grade-school arithmetic word problems with short step-by-step
solutions (our own templates; licence-clean). Writes GSM8K-format jsonl
(`question`, `answer` ending in `#### N`) for train / val / test, split by seed;
no test or val question text appears in train (checked).

    python make_data.py --out models/train/data --train 2000 --val 200 --test 200
"""
import argparse
import json
import os
import random

NAMES = ["Tom", "Anna", "Ben", "Maria", "Sam", "Lily", "Omar", "Nina", "Leo", "Emma",
         "Ravi", "Sofia", "Jack", "Mia", "Hugo", "Zoe", "Ivan", "Chloe", "Noah", "Ava"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps",
         "shells", "cards", "balloons", "oranges", "toy cars", "coins", "flowers"]
CONTAINERS = [("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("pack", "packs"),
              ("jar", "jars"), ("crate", "crates")]


def p_add_sub(r):
    n, it = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(5, 60), r.randint(2, 40)
    c = r.randint(1, a + b - 1)
    q = (f"{n} has {a} {it}. {n} gets {b} more {it} and then gives away {c}. "
         f"How many {it} does {n} have now?")
    s1 = a + b
    s2 = s1 - c
    return q, [f"{a} + {b} = {s1}", f"{s1} - {c} = {s2}"], s2


def p_mul_add(r):
    n, it = r.choice(NAMES), r.choice(ITEMS)
    cs, cp = r.choice(CONTAINERS)
    k, m, e = r.randint(2, 9), r.randint(2, 12), r.randint(1, 20)
    q = (f"{n} buys {k} {cp} of {it}. Each {cs} has {m} {it}. {n} already had {e} {it}. "
         f"How many {it} does {n} have in total?")
    s1 = k * m
    s2 = s1 + e
    return q, [f"{k} * {m} = {s1}", f"{s1} + {e} = {s2}"], s2


def p_div(r):
    n, it = r.choice(NAMES), r.choice(ITEMS)
    f = r.randint(2, 9)
    each = r.randint(2, 15)
    tot = f * each
    q = (f"{n} has {tot} {it} and shares them equally among {f} friends. "
         f"How many {it} does each friend get?")
    return q, [f"{tot} / {f} = {each}"], each


def p_money(r):
    n = r.choice(NAMES)
    it = r.choice(["notebooks", "pens", "tickets", "sandwiches", "cups of juice", "comics"])
    k, price, have = r.randint(2, 9), r.randint(2, 12), 0
    s1 = k * price
    have = s1 + r.randint(1, 50)
    q = (f"{n} has {have} dollars and buys {k} {it} that cost {price} dollars each. "
         f"How many dollars does {n} have left?")
    return q, [f"{k} * {price} = {s1}", f"{have} - {s1} = {have - s1}"], have - s1


def p_two_people(r):
    a, b = r.sample(NAMES, 2)
    it = r.choice(ITEMS)
    x = r.randint(3, 40)
    d = r.randint(2, 30)
    q = (f"{a} has {x} {it}. {b} has {d} more {it} than {a}. "
         f"How many {it} do they have together?")
    y = x + d
    return q, [f"{x} + {d} = {y}", f"{x} + {y} = {x + y}"], x + y


def p_three_step(r):
    n, it = r.choice(NAMES), r.choice(ITEMS)
    cs, cp = r.choice(CONTAINERS)
    k, m = r.randint(2, 8), r.randint(3, 10)
    s1 = k * m
    g = r.randint(1, s1 - 1)
    s2 = s1 - g
    b = r.randint(2, 25)
    q = (f"{n} fills {k} {cp} with {m} {it} each. Then {n} gives {g} {it} to a neighbour "
         f"and finds {b} more. How many {it} does {n} have now?")
    return q, [f"{k} * {m} = {s1}", f"{s1} - {g} = {s2}", f"{s2} + {b} = {s2 + b}"], s2 + b


KINDS = [p_add_sub, p_mul_add, p_div, p_money, p_two_people, p_three_step]


def make(seed, count, exclude=()):
    r = random.Random(seed)
    out, seen = [], set(exclude)
    while len(out) < count:
        q, steps, ans = r.choice(KINDS)(r)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": "\n".join(steps) + f"\n#### {ans}"})
    return out


def response_text(answer):
    """The assistant turn we train on: the steps, then 'The answer is N.'"""
    steps, final = answer.split("\n#### ")
    return steps + f"\nThe answer is {final}."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    test = make(3, a.test)
    val = make(2, a.val, exclude={x["question"] for x in test})
    train = make(1, a.train, exclude={x["question"] for x in test + val})
    assert not ({x["question"] for x in train} & {x["question"] for x in test + val})
    for name, rows in [("train", train), ("val", val), ("test", test)]:
        with open(os.path.join(a.out, f"{name}.jsonl"), "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(name, len(rows))


if __name__ == "__main__":
    main()
