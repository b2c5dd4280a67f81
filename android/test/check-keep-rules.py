#!/usr/bin/env python3
"""Checks android/consumer-rules.pro against the JNI bridge: every class, method
and field that android/jni-bridge/src/lib.rs looks up by name (FindClass via
throw_new / find_class / new_object, GetMethodID via call_method, GetFieldID via
get_field) must be kept by a rule, with the Java signature its JNI descriptor
gives; the natives of ai.tah.Tah must be kept by name. Names of platform classes
(java.*, android.*), which R8 never renames, need only a comment saying so.

  android/test/check-keep-rules.py [lib.rs] [consumer-rules.pro]
"""
import os
import re
import sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
lib = sys.argv[1] if len(sys.argv) > 1 else f"{root}/android/jni-bridge/src/lib.rs"
pro = sys.argv[2] if len(sys.argv) > 2 else f"{root}/android/consumer-rules.pro"
src = open(lib).read()
rules_text = open(pro).read()
rules = "\n".join(l.split("#", 1)[0] for l in rules_text.splitlines())
comments = "\n".join(l.split("#", 1)[1] for l in rules_text.splitlines() if "#" in l)
# Members of platform classes the bridge reads (java.io.FileDescriptor's int).
PLATFORM_MEMBERS = {"descriptor", "fd"}

consts = {}
for m in re.finditer(r'const (\w+): &str = "([^"]*)";', src):
    consts[m.group(1)] = [m.group(2)]
for m in re.finditer(r"const (\w+): \[&str; \d+\] = \[([^\]]*)\];", src):
    consts[m.group(1)] = re.findall(r'"([^"]*)"', m.group(2))
loops = {m.group(1): m.group(2) for m in re.finditer(r"for (\w+) in (\w+)\b", src)}


def resolve(arg):
    arg = arg.strip()
    if arg.startswith('"'):
        return [arg.strip('"')]
    if arg in consts:
        return consts[arg]
    if arg in loops and loops[arg] in consts:
        return consts[loops[arg]]
    sys.exit(f"check-keep-rules: cannot resolve the JNI name argument `{arg}` in {lib}")


def args_of(start):
    """The top-level arguments of the call whose '(' is at src[start]."""
    depth, out, cur = 0, [], ""
    for c in src[start:]:
        if c in "([{":
            depth += 1
            if depth == 1:
                continue
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                out.append(cur)
                return out
        if c == "," and depth == 1:
            out.append(cur)
            cur = ""
        else:
            cur += c
    sys.exit("check-keep-rules: unbalanced call")


PRIM = {"Z": "boolean", "B": "byte", "C": "char", "S": "short", "I": "int", "J": "long",
        "F": "float", "D": "double", "V": "void"}


def java_types(desc):
    out, i = [], 0
    while i < len(desc):
        dims = 0
        while desc[i] == "[":
            dims += 1
            i += 1
        if desc[i] == "L":
            j = desc.index(";", i)
            t = desc[i + 1:j].replace("/", ".")
            i = j + 1
        else:
            t = PRIM[desc[i]]
            i += 1
        out.append(t + "[]" * dims)
    return out


def java_sig(name, desc):
    params, ret = re.fullmatch(r"\((.*)\)(.+)", desc).groups()
    return f"{java_types(ret)[0]} {name}({', '.join(java_types(params))})"


classes, methods, fields = set(), set(), set()
for m in re.finditer(r"\.(throw_new|find_class|new_object|call_method|call_static_method|"
                     r"get_method_id|get_static_method_id|get_field|get_static_field|set_field|"
                     r"get_field_id|get_static_field_id)\(", src):
    kind, a = m.group(1), args_of(m.end() - 1)
    if kind in ("throw_new", "find_class", "new_object"):
        for c in resolve(a[0]):
            classes.add(c)
    elif "method" in kind:
        for n in resolve(a[1]):
            for d in resolve(a[2]):
                methods.add(java_sig(n, d))
    else:
        for n in resolve(a[1]):
            fields.add(n)

errors = []
for c in sorted(classes):
    dotted = c.replace("/", ".")
    if c.startswith(("java/", "android/")):
        continue
    if not re.search(rf"\bclass {re.escape(dotted)}\b", rules):
        errors.append(f"class {dotted} (FindClass) is not kept")
    # throw_new constructs it with a String.
    if "throw_new" in src and not re.search(r"<init>\(java\.lang\.String\)", rules):
        errors.append(f"{dotted}(String) constructor is not kept")
for s in sorted(methods):
    if s not in rules:
        errors.append(f"method `{s}` (GetMethodID) is not kept")
for f in sorted(fields):
    if f in PLATFORM_MEMBERS:
        if not re.search(rf"\b{f}\b", comments):
            errors.append(f"platform field {f}: say in a comment why it needs no rule")
    elif not re.search(rf"\b{f}\b", rules):
        errors.append(f"field {f} (GetFieldID) is not kept")
if not re.search(r"class ai\.tah\.Tah\s*\{\s*native <methods>;", rules):
    errors.append("the natives of ai.tah.Tah are not kept by name")
if errors:
    print("check-keep-rules: " + pro + ":", file=sys.stderr)
    for e in errors:
        print("  " + e, file=sys.stderr)
    sys.exit(1)
print(f"check-keep-rules: {pro} keeps the {len(classes)} classes, {len(methods)} methods and "
      f"{len(fields)} fields the bridge looks up: {sorted(classes)} {sorted(methods)} {sorted(fields)}",
      file=sys.stderr)
