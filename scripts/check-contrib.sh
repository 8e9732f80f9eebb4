#!/usr/bin/env bash
# `make check-contrib` (part of `make test`): the alerting rules and the
# Grafana dashboard in contrib/ still fit warren.
#  - `promtool check rules` and `promtool test rules` (Debian's prometheus
#    package ships promtool; scripts/deps.sh installs it);
#  - the dashboard is valid JSON, every panel has a query, ids are unique,
#    and every panel query is valid PromQL (promtool checks it as a
#    recording rule, the dashboard's variables replaced by plain values);
#  - every warren_* metric the rules or the dashboard name is one warren
#    exports (a `label: "warren_..."` in Sources/) and the README documents
#    (Metrics and health), so a renamed metric cannot leave them behind.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null || { echo "check-contrib: promtool is missing: run scripts/deps.sh (Debian package prometheus)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

promtool check rules contrib/prometheus/warren-alerts.yml
promtool test rules contrib/prometheus/warren-alerts.test.yml

python3 - "$tmp/dashboard-queries.yml" <<'PY'
import json, re, sys

problems = []
dashboard_file = "contrib/grafana/warren.json"
with open(dashboard_file) as f:
    dashboard = json.load(f)

def all_panels(panels):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))

exprs = []
ids = set()
for panel in all_panels(dashboard.get("panels", [])):
    title = panel.get("title", "?")
    if panel.get("id") in ids:
        problems.append(f"{dashboard_file}: panel id {panel.get('id')} is used twice")
    ids.add(panel.get("id"))
    if panel.get("type") == "row":
        continue
    targets = panel.get("targets", [])
    if not targets:
        problems.append(f"{dashboard_file}: panel '{title}' has no query")
    for target in targets:
        expr = target.get("expr", "")
        if not expr.strip():
            problems.append(f"{dashboard_file}: panel '{title}' has an empty query")
        exprs.append((title, expr))
for variable in dashboard.get("templating", {}).get("list", []):
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query", "")
    if isinstance(query, str) and query.startswith("label_values("):
        exprs.append((f"variable {variable['name']}", query))

# promtool checks each panel query as a recording rule: Grafana's
# variables become values PromQL accepts.
def plain(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)
with open(sys.argv[1], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for n, (title, expr) in enumerate(exprs):
        if expr.startswith("label_values("):
            continue
        out.write(f"      - record: dashboard:panel_{n}\n        expr: {json.dumps(plain(expr))}\n")

# The metric names warren exports and the README documents.
import glob
exported = set()
for path in glob.glob("Sources/**/*.swift", recursive=True):
    with open(path) as f:
        exported |= set(re.findall(r'label:\s*"(warren_[a-z0-9_]+)"', f.read()))
with open("README.md") as f:
    readme = f.read()
section = re.split(r"\n##+ ", readme.split("### Metrics and health\n", 1)[1], maxsplit=1)[0] if "### Metrics and health\n" in readme else ""
if not section:
    problems.append("README.md has no \"### Metrics and health\" section: the list of metrics the dashboard may use")
documented = set(re.findall(r"\b(warren_[a-z0-9_]+)", section))
if not exported:
    problems.append("no metric found in Sources/ (label: \"warren_...\"): has the metrics code moved?")

def base(name):
    # A histogram (swift-metrics Timer) is exported as _bucket, _sum and _count.
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in exported:
            return name[: -len(suffix)]
    return name

used = {}
for title, expr in exprs:
    for name in re.findall(r"\b(warren_[a-z0-9_]+)", expr):
        used.setdefault(base(name), set()).add(f"{dashboard_file} ({title})")
rules_file = "contrib/prometheus/warren-alerts.yml"
with open(rules_file) as f:
    for number, line in enumerate(f, 1):
        if line.lstrip().startswith("#"):
            continue
        for name in re.findall(r"\b(warren_[a-z0-9_]+)", line):
            used.setdefault(base(name), set()).add(f"{rules_file}:{number}")

for name, places in sorted(used.items()):
    where = ", ".join(sorted(places))
    if name not in exported:
        problems.append(f"{name} is not a metric warren exports (no label: \"{name}\" in Sources/); used in {where}")
    elif name not in documented:
        problems.append(f"{name} is not in the README's metrics list (Metrics and health); used in {where}")

if problems:
    print("check-contrib: " + "\ncheck-contrib: ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"{dashboard_file}: {len(exprs)} queries; {len(used)} metric names, each exported and documented")
PY
promtool check rules "$tmp/dashboard-queries.yml" >/dev/null || {
    promtool check rules "$tmp/dashboard-queries.yml" >&2 || true
    echo "check-contrib: a dashboard query is not valid PromQL (above; the rule number is its place in contrib/grafana/warren.json)" >&2
    exit 1
}
echo "contrib checked: alerting rules, their tests, the dashboard"
