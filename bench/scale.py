#!/usr/bin/env python3
"""Scenarios of every shipped product at any size, generated from the product's example.

    python3 bench/scale.py PRODUCT N OUTDIR     writes OUTDIR/scenario.toml (+ inventory.toml)

Each product's example scenario (examples/PRODUCT/) is read and its hosts are cloned, one clone
per host of the generated cluster, with the host's name, address, endpoint, pid and node names
made unique (OceanBase: three zones of N/3 observers; OpenMLDB: 2 nameservers, N-4 tablets, an
apiserver and a taskmanager; DolphinDB: N machines; OMS: N nodes). The data is the example's
(its tables, its chunks); with `per-host` it grows with the cluster (OpenMLDB: 4 partitions per
tablet; DolphinDB: 2 chunks per machine). The playbook is the shipped one, unchanged.
Used by `bench.py scale`.
"""
import copy
import json
import os
import sys
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(product, name="scenario.toml"):
    d = os.path.join(REPO, "examples", product)
    with open(os.path.join(d, name), "rb") as f:
        scn = tomllib.load(f)
    inv = None
    if "inventory_file" in scn:
        with open(os.path.join(d, scn["inventory_file"]), "rb") as f:
            inv = tomllib.load(f)
    else:
        inv = scn.pop("inventory")
    scn.pop("inventory_file", None)
    return scn, inv


def subst(v, subs):
    """`v` with every string's substrings replaced (longest key first)."""
    if isinstance(v, str):
        for a, b in subs:
            v = v.replace(a, b)
        return v
    if isinstance(v, list):
        return [subst(x, subs) for x in v]
    if isinstance(v, dict):
        return {subst(k, subs): subst(x, subs) for k, x in v.items()}
    return v


def address(net, i):
    return f"10.{net}.{i // 250}.{i % 250 + 1}"


def clone(scn, inv, template, name, subs):
    """Adds host `name`, a copy of `template` in the scenario and the inventory."""
    subs = sorted(subs, key=lambda s: -len(s[0]))
    scn["hosts"][name] = subst(copy.deepcopy(scn["hosts"].get(template, {})), subs)
    inv["hosts"][name] = subst(copy.deepcopy(inv["hosts"][template]), subs)


def oceanbase(n, data="example"):
    scn, inv = load("oceanbase")
    t = "ob1"
    scn_t, inv_t = scn["hosts"].pop(t), inv["hosts"].pop(t)
    for h in ("ob2", "ob3"):
        scn["hosts"].pop(h), inv["hosts"].pop(h)
    scn["hosts"][t], inv["hosts"][t] = scn_t, inv_t
    for i in range(n):
        zone = f"zone{i % 3 + 1}"
        clone(scn, inv, t, f"ob{i + 1:05}",
              [(inv_t["address"], address(2, i)), ('"42000', f'"{42000 + i}'), ("42000\n", f"{42000 + i}\n")])
        inv["hosts"][f"ob{i + 1:05}"].setdefault("vars", {})["zone"] = zone
    scn["hosts"].pop(t), inv["hosts"].pop(t)
    scn["description"] = f"OceanBase rolling upgrade, 3 zones, {n} observers"
    return scn, inv


def openmldb(n, data="example"):
    scn, inv = load("openmldb")
    tablets = max(n - 4, 3)
    roles = [("ns", 2, "ns1", 1), ("tablet", tablets, "tablet1", 2), ("api", 1, "api1", 3), ("tm", 1, "tm1", 4)]
    templates = {t: (scn["hosts"][t], inv["hosts"][t]) for _, _, t, _ in roles}
    scn["hosts"], inv["hosts"] = {}, {}
    pid = 31000
    for role, count, t, net in roles:
        st, it = templates[t]
        scn["hosts"][t], inv["hosts"][t] = st, it
        old_pid = next(v for k, v in st["files"].items() if k.endswith(".pid")).strip()
        for i in range(count):
            a = address(net, i)
            clone(scn, inv, t, f"{role}{i + 1:05}", [(it["address"], a), (old_pid + "\n", f"{pid}\n")])
            pid += 1
        del scn["hosts"][t], inv["hosts"][t]
    if data == "example":
        scn["description"] = f"OpenMLDB upgrade: 2 nameservers, {tablets} tablets, an apiserver, a taskmanager"
        return scn, inv
    # 4 partitions per tablet: tables of 8 partitions × 3 replicas, one of 4 × 2, one of 1 × 1.
    tables = [{"db": "bank", "name": "accounts", "partitions": 4, "replicas": 2},
              {"db": "ops", "name": "feature_cache", "partitions": 1, "replicas": 1}]
    for i in range(max(1, (4 * tablets - 5) // 8)):
        tables.append({"db": "bank", "name": f"transactions_{i:04}", "partitions": 8, "replicas": 3})
    scn["products"][0]["tables"] = tables
    scn["description"] = f"OpenMLDB upgrade: 2 nameservers, {tablets} tablets, an apiserver, a taskmanager"
    return scn, inv


def one_template(product, t, n, name, subs):
    """The example with its hosts replaced by n clones of host `t`: clone i is `name(i)`, with
    the substitutions `subs(i, scenario_host, inventory_host)`."""
    scn, inv = load(product)
    st, it = scn["hosts"][t], inv["hosts"][t]
    scn["hosts"], inv["hosts"] = {t: st}, {t: it}
    for i in range(n):
        clone(scn, inv, t, name(i), subs(i, st, it))
    del scn["hosts"][t], inv["hosts"][t]
    return scn, inv


def dolphindb(n, data="example"):
    def subs(i, _, it):
        v, k = it["vars"], 1000 + i
        return [(it["address"], address(11, i)), (v["controller"], f"HActl{k}"),
                (v["agent"], f"agent{k}"), (v["datanode"], f"node{k}")]
    scn, inv = one_template("dolphindb", "ddb1", n, lambda i: f"ddb{i + 1:05}", subs)
    if data == "per-host":
        scn["products"][0]["chunks"] = 2 * n
    scn["description"] = f"DolphinDB grayscale upgrade of a {n}-machine HA cluster"
    return scn, inv


def oms(n, data="example"):
    scn, inv = one_template("oms", "oms1", n, lambda i: f"oms{i + 1:05}",
                            lambda i, _, it: [(it["address"], address(3, i + 100))])
    scn["description"] = f"OMS upgrade of {n} nodes in one region"
    return scn, inv


PRODUCTS = {"oceanbase": oceanbase, "openmldb": openmldb, "dolphindb": dolphindb, "oms": oms}


def host_at(product, n, at):
    """The host at fraction `at` (0-1) of the hosts the playbook upgrades one by one (OpenMLDB:
    the tablets; the others: every host), for a fault late or early in a rehearsal."""
    count = max(n - 4, 3) if product == "openmldb" else n
    i = min(count - 1, max(0, int(at * count)))
    prefix = {"oceanbase": "ob", "openmldb": "tablet", "dolphindb": "ddb", "oms": "oms"}[product]
    return f"{prefix}{i + 1:05}"


# ------------------------------------------------------------------ a TOML writer for these files

def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def key(k):
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else json.dumps(k)


def table(out, path, t):
    """Writes table `t` at `path`: scalars and inline values, then sub-tables and arrays of tables."""
    plain = {k: v for k, v in t.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
    if path and (plain or not t):
        out.append(f"\n[{'.'.join(key(p) for p in path)}]")
    for k, v in plain.items():
        out.append(f"{key(k)} = {value(v)}")
    for k, v in t.items():
        if k in plain:
            continue
        if isinstance(v, dict):
            table(out, path + [k], v)
        else:
            for x in v:
                out.append(f"\n[[{'.'.join(key(p) for p in path + [k])}]]")
                sub = {a: b for a, b in x.items()}
                for a, b in sub.items():
                    out.append(f"{key(a)} = {value(b)}")


def dumps(t):
    out = []
    table(out, [], t)
    return "\n".join(out) + "\n"


def write(product, n, outdir, data="example"):
    scn, inv = PRODUCTS[product](n, data)
    os.makedirs(outdir, exist_ok=True)
    scn["inventory_file"] = "inventory.toml"
    with open(os.path.join(outdir, "inventory.toml"), "w") as f:
        f.write(dumps(inv))
    with open(os.path.join(outdir, "scenario.toml"), "w") as f:
        f.write(dumps(scn))
    return os.path.join(outdir, "scenario.toml")


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in PRODUCTS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(PRODUCTS)}}} N OUTDIR [example|per-host]")
    print(write(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:]))
