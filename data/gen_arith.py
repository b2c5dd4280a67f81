#!/usr/bin/env python3
"""Writes data/arith-100.jsonl: grade-school word problems in GSM8K's format
({"question": ..., "answer": "<short solution>\\n#### N"}).

Original text, written for this project (no problem is taken from GSM8K or any
other set). Numbers come from a fixed linear congruential generator, so the file
is the same on every run:  python3 data/gen_arith.py > data/arith-100.jsonl

Every solution step is an equation "EXPR = VALUE" whose VALUE this script
computes from EXPR with exact fractions; the answer after '####' is the value of
the last step. `python3 data/gen_arith.py --check FILE` re-checks a file the
same way (so does tests/eval_data.rs in `cargo test`).
"""
import json
import re
import sys
from fractions import Fraction


class Lcg:
    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return self.s >> 33

    def int(self, lo, hi):  # inclusive
        return lo + self.next() % (hi - lo + 1)

    def pick(self, xs):
        return xs[self.next() % len(xs)]


NAMES = ["Amara", "Bilal", "Chen", "Dara", "Elif", "Femi", "Greta", "Hugo", "Ines",
         "Jonas", "Kiri", "Luca", "Mina", "Noor", "Oskar", "Priya", "Quinn", "Rosa",
         "Sami", "Tomas", "Uma", "Vera", "Wren", "Yusuf", "Zoe"]


def value(expr):
    """Exact value of an arithmetic expression of numbers, + - * / and ()."""
    if not re.fullmatch(r"[0-9.+\-*/() ]+", expr):
        raise ValueError("not arithmetic: " + expr)
    expr = re.sub(r"(\d+(?:\.\d+)?)", r"Fraction('\1')", expr)
    return eval(expr, {"Fraction": Fraction, "__builtins__": {}})


def fmt(v):
    v = Fraction(v)
    if v.denominator == 1:
        return str(v.numerator)
    d = v.numerator / v.denominator
    s = ("%.2f" % d).rstrip("0").rstrip(".")
    if Fraction(s) != v:
        raise ValueError("not a short decimal: %r" % v)
    return s


class Sol:
    """A solution under construction: each step computes its own value."""

    def __init__(self):
        self.lines = []
        self.last = None

    def step(self, text, expr):
        v = value(expr)
        self.lines.append(text.format(expr + " = " + fmt(v)))
        self.last = v
        return v

    def answer(self):
        return "\n".join(self.lines) + "\n#### " + fmt(self.last)


# Each template takes the generator and returns (question, Sol).

def t_apples(r):
    n, a, b = r.pick(NAMES), r.int(12, 60), r.int(2, 9)
    c = r.int(1, a - 1)
    s = Sol()
    left = s.step("After giving some away: {}.", f"{a} - {c}")
    s.step("After buying more: {}.", f"{fmt(left)} + {b}")
    return (f"{n} picked {a} apples, gave {c} of them to the neighbours and then "
            f"bought {b} more at the market. How many apples does {n} have now?", s)


def t_pencils_boxes(r):
    n, boxes, per, lost = r.pick(NAMES), r.int(3, 9), r.int(6, 24), r.int(1, 5)
    s = Sol()
    tot = s.step("Pencils in the boxes: {}.", f"{boxes} * {per}")
    s.step("After losing some: {}.", f"{fmt(tot)} - {lost}")
    return (f"{n} has {boxes} boxes of pencils with {per} pencils in each box. "
            f"{n} loses {lost} pencils. How many pencils are left?", s)


def t_share(r):
    kids, per, extra = r.int(3, 8), r.int(4, 15), r.int(1, 9)
    total = kids * per + extra
    s = Sol()
    shared = s.step("Stickers that can be shared evenly: {}.", f"{total} - {extra}")
    s.step("Each child gets {}.", f"{fmt(shared)} / {kids}")
    return (f"A teacher has {total} stickers. She keeps {extra} for herself and shares "
            f"the rest equally among {kids} children. How many stickers does each "
            f"child get?", s)


def t_money_change(r):
    n, price, qty = r.pick(NAMES), r.int(2, 12), r.int(2, 6)
    paid = 10 * ((price * qty) // 10 + 1) + r.pick([0, 10, 20])
    s = Sol()
    cost = s.step("The notebooks cost {} dollars.", f"{price} * {qty}")
    s.step("The change is {} dollars.", f"{paid} - {fmt(cost)}")
    return (f"{n} buys {qty} notebooks that cost ${price} each and pays with ${paid}. "
            f"How much change, in dollars, does {n} get back?", s)


def t_speed(r):
    speed, hours = r.int(35, 90), r.int(2, 7)
    s = Sol()
    s.step("Distance: {} kilometres.", f"{speed} * {hours}")
    return (f"A train travels at {speed} kilometres per hour for {hours} hours without "
            f"stopping. How many kilometres does it travel?", s)


def t_pages(r):
    n, total, per_day, days = r.pick(NAMES), r.int(150, 480), r.int(12, 30), r.int(3, 6)
    s = Sol()
    read = s.step("Pages read so far: {}.", f"{per_day} * {days}")
    s.step("Pages still to read: {}.", f"{total} - {fmt(read)}")
    return (f"A book has {total} pages. {n} reads {per_day} pages every day for {days} "
            f"days. How many pages are left to read?", s)


def t_garden_rows(r):
    rows, per, dead = r.int(4, 12), r.int(5, 15), r.int(2, 9)
    s = Sol()
    planted = s.step("Seedlings planted: {}.", f"{rows} * {per}")
    s.step("Seedlings that survive: {}.", f"{fmt(planted)} - {dead}")
    return (f"A gardener plants {rows} rows of tomato seedlings with {per} seedlings in "
            f"each row. A frost kills {dead} of them. How many seedlings survive?", s)


def t_half_then(r):
    n, start, spent = r.pick(NAMES), 2 * r.int(20, 90), r.int(3, 15)
    s = Sol()
    half = s.step("Half of the money is {} dollars.", f"{start} / 2")
    s.step("After the snack {} dollars are left.", f"{fmt(half)} - {spent}")
    return (f"{n} had ${start}. {n} put half of it into a savings account and then spent "
            f"${spent} on a snack. How many dollars does {n} have left to spend?", s)


def t_bus(r):
    start, off, on = r.int(20, 45), r.int(3, 12), r.int(2, 15)
    off2 = r.int(1, 8)
    s = Sol()
    a = s.step("After the first stop: {}.", f"{start} - {off} + {on}")
    s.step("After the second stop: {}.", f"{fmt(a)} - {off2}")
    return (f"A bus leaves the depot with {start} passengers. At the first stop {off} "
            f"people get off and {on} get on. At the second stop {off2} people get off. "
            f"How many passengers are on the bus now?", s)


def t_weeks(r):
    n, per_day, weeks = r.pick(NAMES), r.int(2, 9), r.int(2, 5)
    s = Sol()
    days = s.step("Days: {}.", f"{weeks} * 7")
    s.step("Glasses of water: {}.", f"{fmt(days)} * {per_day}")
    return (f"{n} drinks {per_day} glasses of water every day. How many glasses does {n} "
            f"drink in {weeks} weeks?", s)


def t_rect_perimeter(r):
    w, h = r.int(3, 25), r.int(3, 25)
    s = Sol()
    s.step("Perimeter: {} metres.", f"2 * ({w} + {h})")
    return (f"A rectangular playground is {w} metres long and {h} metres wide. A fence "
            f"goes all the way around it. How many metres of fence are needed?", s)


def t_rect_area_tiles(r):
    w, h, price = r.int(3, 12), r.int(3, 12), r.int(2, 9)
    s = Sol()
    area = s.step("Area: {} square metres.", f"{w} * {h}")
    s.step("Cost: {} dollars.", f"{fmt(area)} * {price}")
    return (f"A kitchen floor measures {w} metres by {h} metres. Tiles cost ${price} per "
            f"square metre. How many dollars do the tiles for the whole floor cost?", s)


def t_percent_off(r):
    price, pct = 10 * r.int(3, 30), r.pick([10, 20, 25, 30, 40, 50])
    s = Sol()
    off = s.step("The discount is {} dollars.", f"{price} * {pct} / 100")
    s.step("The sale price is {} dollars.", f"{price} - {fmt(off)}")
    return (f"A jacket costs ${price}. During a sale it is {pct}% off. What is the sale "
            f"price in dollars?", s)


def t_eggs_dozens(r):
    dozens, broken = r.int(2, 9), r.int(2, 7)
    s = Sol()
    eggs = s.step("Eggs bought: {}.", f"{dozens} * 12")
    s.step("Unbroken eggs: {}.", f"{fmt(eggs)} - {broken}")
    return (f"A baker buys {dozens} dozen eggs. On the way back {broken} eggs break. How "
            f"many unbroken eggs does the baker have?", s)


def t_minutes(r):
    n, hours, mins = r.pick(NAMES), r.int(2, 4), r.int(5, 55)
    s = Sol()
    s.step("Minutes in all: {}.", f"{hours} * 60 + {mins}")
    return (f"{n}'s bike ride took {hours} hours and {mins} minutes. How many minutes "
            f"long was the ride?", s)


def t_age(r):
    n, m, age, diff, years = r.pick(NAMES), r.pick(NAMES), r.int(6, 14), r.int(2, 9), r.int(2, 10)
    if m == n:
        m = "Ari"
    s = Sol()
    older = s.step(f"{m} is {{}} years old now.", f"{age} + {diff}")
    s.step(f"In {years} years {m} will be {{}}.", f"{fmt(older)} + {years}")
    return (f"{n} is {age} years old. {m} is {diff} years older than {n}. How old will "
            f"{m} be in {years} years?", s)


def t_saving(r):
    n, goal, per_week, have = r.pick(NAMES), 5 * r.int(30, 80), 5 * r.int(2, 8), 5 * r.int(1, 10)
    while (goal - have) % per_week:
        goal += 5
    s = Sol()
    need = s.step("Still needed: {} dollars.", f"{goal} - {have}")
    s.step("Weeks of saving: {}.", f"{fmt(need)} / {per_week}")
    return (f"{n} wants a bicycle that costs ${goal}. {n} already has ${have} and saves "
            f"${per_week} every week. How many weeks will it take to have exactly enough?", s)


def t_cookies_trays(r):
    trays, per, eaten = r.int(2, 6), r.int(8, 24), r.int(2, 10)
    bags = r.pick([2, 3, 4])
    total = trays * per - eaten
    eaten += total % bags
    s = Sol()
    left = s.step("Cookies left after the tasting: {}.", f"{trays} * {per} - {eaten}")
    s.step("Cookies in each bag: {}.", f"{fmt(left)} / {bags}")
    return (f"A class bakes {trays} trays of cookies with {per} cookies on each tray. They "
            f"eat {eaten} while tasting, then pack the rest equally into {bags} bags. How "
            f"many cookies go in each bag?", s)


def t_temperature(r):
    start, drop = r.int(-5, 8), r.int(6, 18)
    s = Sol()
    s.step("Temperature at midnight: {} degrees.", f"{start} - {drop}".replace("- -", "+ "))
    return (f"At 6 pm the temperature was {start} degrees Celsius. By midnight it had "
            f"fallen by {drop} degrees. What was the temperature at midnight, in degrees "
            f"Celsius?", s)


def t_fraction_class(r):
    den = r.pick([3, 4, 5])
    num = r.int(1, den - 1)
    size = den * r.int(5, 9)
    s = Sol()
    walk = s.step("Students who walk: {}.", f"{size} * {num} / {den}")
    s.step("Students who do not walk: {}.", f"{size} - {fmt(walk)}")
    return (f"There are {size} students in a year group, and {num}/{den} of them walk to "
            f"school. How many students do not walk to school?", s)


def t_fuel(r):
    km, per100, price = 100 * r.int(2, 8), r.int(5, 9), r.pick([1.5, 2, 2.5])
    s = Sol()
    litres = s.step("Fuel used: {} litres.", f"{km} / 100 * {per100}")
    s.step("Fuel cost: {} dollars.", f"{fmt(litres)} * {fmt(price)}")
    return (f"A car uses {per100} litres of fuel per 100 kilometres. Fuel costs "
            f"${fmt(price)} per litre. How many dollars does the fuel for a {km} kilometre "
            f"trip cost?", s)


def t_tickets(r):
    adults, kids, pa, pk = r.int(1, 4), r.int(1, 5), r.int(9, 20), r.int(4, 9)
    s = Sol()
    a = s.step("Adult tickets: {} dollars.", f"{adults} * {pa}")
    k = s.step("Child tickets: {} dollars.", f"{kids} * {pk}")
    s.step("Total: {} dollars.", f"{fmt(a)} + {fmt(k)}")
    return (f"Museum tickets cost ${pa} for an adult and ${pk} for a child. A family buys "
            f"{adults} adult tickets and {kids} child tickets. How many dollars do they "
            f"pay?", s)


def t_thousands(r):
    # Large numbers: answers with thousands separators in prose.
    seats, games, empty = r.int(1200, 4800), r.int(3, 9), r.int(50, 400)
    s = Sol()
    full = s.step("Seats filled per game: {}.", f"{seats} - {empty}")
    s.step("Tickets sold in all: {}.", f"{fmt(full)} * {games}")
    return (f"A stadium has {seats:,} seats. At each of {games} home games, {empty} seats "
            f"stay empty. How many tickets are sold over the {games} games?", s)


def t_average(r):
    scores = [r.int(55, 99) for _ in range(3)]
    scores.append(r.int(55, 99))
    while sum(scores) % 4:
        scores[3] += 1
    s = Sol()
    tot = s.step("Sum of the scores: {}.", " + ".join(map(str, scores)))
    s.step("Mean score: {}.", f"{fmt(tot)} / 4")
    return (f"{r.pick(NAMES)} scored {scores[0]}, {scores[1]}, {scores[2]} and {scores[3]} "
            f"on four tests. What is the mean score?", s)


def t_rope(r):
    length, piece = r.int(3, 9) * 10, r.pick([2, 2.5, 5])
    s = Sol()
    s.step("Pieces: {}.", f"{length} / {fmt(piece)}")
    return (f"A rope {length} metres long is cut into pieces that are each {fmt(piece)} "
            f"metres long. How many pieces are there?", s)


def t_half_price(r):
    n, price, qty = r.pick(NAMES), 2 * r.int(2, 9), 2 * r.int(2, 5)
    s = Sol()
    full = s.step("Full-price mugs: {}.", f"{qty} / 2")
    cost_full = s.step("Full-price mugs cost {} dollars.", f"{fmt(full)} * {price}")
    half = s.step("Half-price mugs cost {} dollars.", f"{fmt(full)} * {price} / 2")
    s.step("Total: {} dollars.", f"{fmt(cost_full)} + {fmt(half)}")
    return (f"Mugs cost ${price} each, and every second mug is half price. {n} buys {qty} "
            f"mugs. How many dollars does {n} pay?", s)


TEMPLATES = [t_apples, t_pencils_boxes, t_share, t_money_change, t_speed, t_pages,
             t_garden_rows, t_half_then, t_bus, t_weeks, t_rect_perimeter,
             t_rect_area_tiles, t_percent_off, t_eggs_dozens, t_minutes, t_age, t_saving,
             t_cookies_trays, t_temperature, t_fraction_class, t_fuel, t_tickets,
             t_thousands, t_average, t_rope, t_half_price]

STEP = re.compile(r"([0-9.+\-*/() ]+)=\s*(-?[0-9]+(?:\.[0-9]+)?)")


def check_line(obj):
    """Re-computes every 'EXPR = VALUE' step; the answer must be the last value."""
    sol, _, ans = obj["answer"].rpartition("####")
    last = None
    steps = 0
    for expr, val in STEP.findall(sol):
        got = value(expr.strip())
        if got != Fraction(val):
            raise ValueError(f"{expr.strip()} = {val}, but it is {got}")
        last = got
        steps += 1
    if steps == 0:
        raise ValueError("no steps")
    if Fraction(ans.strip()) != last:
        raise ValueError(f"answer {ans.strip()} is not the last step's {last}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        n = 0
        with open(sys.argv[2]) as f:
            for i, line in enumerate(f, 1):
                try:
                    check_line(json.loads(line))
                except Exception as e:
                    sys.exit(f"line {i}: {e}")
                n += 1
        print(f"{n} problems checked")
        return
    r = Lcg(20250611)
    seen = set()
    out = []
    rounds = 0
    while len(out) < 104:
        for t in TEMPLATES:
            if len(out) >= 104:
                break
            q, s = t(r)
            if q in seen:
                continue
            seen.add(q)
            obj = {"question": q, "answer": s.answer()}
            check_line(obj)
            out.append(obj)
        rounds += 1
    # Interleave the templates (round-robin order already does), one per line.
    for o in out:
        print(json.dumps(o, ensure_ascii=False))


if __name__ == "__main__":
    main()
