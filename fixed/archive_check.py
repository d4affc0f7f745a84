"""
Checks a candidate's exported program (a torch.export .pt2 archive) BEFORE anything in it is loaded,
and writes a sanitized copy that torch.export.load can read without running any of the candidate's code.

Why: the archive is written by the candidate's process, so every byte of it is the adversary's.
torch.export.load unpickles entries marked use_pickle (weights_only=False), unpickles the sample
inputs (falling back to weights_only=False), turns `guards_code` strings into Python functions,
evaluates every symbolic-shape `expr_str` with sympy (eval), and calls whatever a node's `target`
names. Each of those runs code. So:

  * every entry of the zip must be of a known kind (below); anything else is refused by name;
  * weights and constants are raw tensor bytes (use_pickle false, tensor_N/weight_N only: no
    custom or opaque objects);
  * the sample inputs are never read: the sanitized copy carries our own;
  * guards_code must be empty, verifiers known, no subgraphs (higher-order ops), no custom objects;
  * every symbolic expression must be made of sympy constructors and symbol names only;
  * every node's operator comes from an allow-list: ATen core ops plus the composite ops models
    need, never an op that mutates, reads files or draws random numbers; a handful of Python
    operators on symbolic sizes;
  * node metadata (stack traces, module paths) is dropped from the sanitized copy.

    problems = check_archive(path)              # [] when it may be loaded
    sanitized = sanitize_archive(path, dest)    # raises ArchiveRefused(problems)

This file is fixed code: it imports torch (for operator tags) but nothing of the candidate's.
"""

import io
import json
import keyword
import re
import zipfile

import torch

MAX_JSON_BYTES = 64 << 20  # the graph of a 50 M-parameter GPT is ~100 KB
MAX_TOTAL_BYTES = 64 << 30  # uncompressed: a zip bomb is refused before it is read
MAX_PROBLEMS = 20

# Entries below the archive's one top-level folder, by pattern.
_ENTRY_KINDS = [
    ("format", re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id")),
    ("graph", re.compile(r"models/model\.json")),
    ("weights config", re.compile(r"data/weights/model_weights_config\.json")),
    ("weight", re.compile(r"data/weights/weight_[0-9]+")),
    ("constants config", re.compile(r"data/constants/model_constants_config\.json")),
    ("constant", re.compile(r"data/constants/tensor_[0-9]+")),
    ("sample inputs", re.compile(r"data/sample_inputs/model\.pt")),  # never read: replaced
]
_TOP = re.compile(r"[A-Za-z0-9_]+")

# Composite (non-core) ATen ops that ordinary models export to; core ops are allowed by their tag.
EXTRA_OPS = frozenset("""
    linear rms_norm layer_norm group_norm scaled_dot_product_attention _assert_tensor_metadata to
    reshape chunk matmul softmax log_softmax einsum t contiguous flatten unflatten type_as expand_as
    view_as split unbind one_hot silu gelu tril triu square zeros_like ones_like full_like alias
    lift_fresh_copy repeat_interleave roll outer softplus logsumexp dot _unsafe_view clone detach
    sym_size sym_numel sym_stride _assert_scalar _assert_async sym_constrain_range_for_size
    scalar_tensor relu6 hardtanh mish instance_norm batch_norm dropout transpose swapaxes swapdims movedim
    narrow tensor_split new_zeros new_ones new_full new_empty masked_fill stack clamp_min clamp_max zeros
    ones baddbmm std var_mean norm linalg_vector_norm all lerp addcmul addcdiv unfold pad conv1d
    polar view_as_complex view_as_real complex
""".split())
# Never: reads or writes files or state outside the graph; or returns uninitialized memory, which on CPU
# still holds the previous call's tensors (a "pure" graph could remember its last input through it).
DENY_OPS = frozenset("""from_file save load _local_scalar_dense_ print set_ resize_ copy_ empty empty_like
    empty_strided new_empty new_empty_strided empty_permuted""".split())
# Seeded ops allowed only without randomness (their dropout probability is 0 or training is off).
SEEDED_OK = {"scaled_dot_product_attention": ("dropout_p", 0.0), "dropout": ("train", False)}
# Python operators on symbolic sizes.
PY_OPS = frozenset("_operator." + n for n in
                   "getitem add sub mul floordiv truediv mod neg pow eq ne lt le gt ge and_ or_ not_".split())
TORCH_SYM = frozenset({"torch.sym_max", "torch.sym_min", "torch.sym_not", "torch.sym_float", "torch.sym_int",
                       "torch.sym_ite", "torch.sym_sqrt"})

# sympy's srepr of a shape expression: constructors, numbers, quoted symbol names, operators.
_SYMPY_NAMES = frozenset("""Symbol Integer Rational Float Add Mul Pow Mod FloorDiv CeilDiv Max Min
    PythonMod IntTrueDiv FloatTrueDiv ToFloat TruncToInt TruncToFloat CeilToInt FloorToInt RoundToInt
    Eq Ne Lt Le Gt Ge And Or Not true false True False positive integer nonnegative negative real
    finite infinite oo int_oo zoo nan S Half One Zero NegativeOne Abs Piecewise CleanDiv
    LShift RShift BitwiseFn_bitwise_and BitwiseFn_bitwise_or OpaqueUnaryFn_sqrt""".split())
_SYMPY_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<sym>'[a-z]+[0-9]+')|"
                          r"(?P<num>[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)|(?P<op>\*\*|//|[-+*/%(),=<>!]=?))")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_ATEN = re.compile(r"torch\.ops\.aten\.([a-z_][a-z0-9_]*)\.([A-Za-z0-9_]+)")


class ArchiveRefused(ValueError):
    """The archive may not be loaded; the message names each offending entry or operator."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _entry_kind(rel):
    for kind, pattern in _ENTRY_KINDS:
        if pattern.fullmatch(rel):
            return kind
    return None


def _sympy_expr_ok(expr):
    """True when expr is only sympy constructor names, quoted symbol names, numbers and operators:
    nothing eval() could turn into an attribute access, an import or a call of anything else."""
    pos = 0
    while pos < len(expr):
        m = _SYMPY_TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            return expr[pos:].strip() == ""
        if m.group("name") and m.group("name") not in _SYMPY_NAMES:
            return False
        pos = m.end()
    return True


def operator_problem(target, node_inputs=()):
    """None when a graph node may call `target`, else why not."""
    if target in PY_OPS or target in TORCH_SYM:
        return None
    m = _ATEN.fullmatch(target)
    if not m:
        return f"operator {target!r} is not an ATen operator on the allow-list (custom ops, higher-order ops and Python functions are refused)"
    name, overload = m.groups()
    if name in DENY_OPS or name.endswith("_") and name not in ("__and__", "__or__"):
        return f"operator {target!r} mutates state or touches files"
    try:
        op = getattr(getattr(torch.ops.aten, name), overload)
    except (AttributeError, RuntimeError):
        return f"operator {target!r} does not exist in this torch"
    if op._schema.is_mutable:
        return f"operator {target!r} writes to its inputs"
    tags = set(op.tags)
    packet = getattr(torch.ops.aten, name)
    core = any(torch.Tag.core in getattr(packet, o).tags for o in packet.overloads())
    if torch.Tag.nondeterministic_seeded in tags:
        rule = SEEDED_OK.get(name)
        args = {i.get("name"): i.get("arg") for i in node_inputs if isinstance(i, dict)}
        if rule is None:
            return f"operator {target!r} draws random numbers: a scored model must be deterministic"
        key, safe = rule
        arg = args.get(key)
        value = None if arg is None else next(iter(arg.values()), None) if isinstance(arg, dict) else arg
        if arg is not None and value != safe:
            return f"operator {target!r} with {key}={value!r} draws random numbers (needs {key}={safe!r})"
    if not core and name not in EXTRA_OPS:
        return f"operator {target!r} is not on the allow-list (ATen core plus {len(EXTRA_OPS)} composite ops)"
    return None


# Names that FX pastes into the Python source it generates for the loaded module.
_NAME_KEYS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name", "token_name",
                        "fqn", "user_input_name", "user_output_name", "input_name", "output_name"})


def _plain_dotted(value):
    """a.b.c with each part an identifier that is neither a keyword nor a dunder: safe inside generated code."""
    return bool(_DOTTED.fullmatch(value)) and all(
        part and not part.startswith("__") and not keyword.iskeyword(part) for part in value.split("."))


def _walk(value, path=""):
    """(path, key, value) for every dict entry of a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path, k, v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def check_graph(doc):
    """Problems of the serialized ExportedProgram (models/model.json), [] when none."""
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("graph_module"), dict):
        return ["models/model.json: not a serialized ExportedProgram"]
    if doc.get("guards_code"):
        problems.append("models/model.json: guards_code is not empty (it would be turned into Python code)")
    for v in doc.get("verifiers") or []:
        if v not in ("TRAINING", "ATEN", ""):
            problems.append(f"models/model.json: unknown verifier {v!r}")
    graph = doc["graph_module"].get("graph") or {}
    if graph.get("custom_obj_values"):
        problems.append("models/model.json: custom objects (torchbind) are refused")
    for where, key, value in _walk(doc):
        if isinstance(value, str) and "__enum__" in value:  # treespec contexts: json object_hook imports it
            problems.append(f"models/model.json{where}.{key}: an __enum__ hook is refused (it imports and calls)")
        elif key == "forward_arg_names" and (not isinstance(value, list) or not all(
                isinstance(v, str) and _plain_dotted(v) and "." not in v for v in value)):
            problems.append(f"models/model.json{where}: forward_arg_names {str(value)[:80]!r} are not plain identifiers")
        elif key in _NAME_KEYS and isinstance(value, str) and value and not _plain_dotted(value):
            problems.append(f"models/model.json{where}: {key} {value[:80]!r} is not a plain dotted name")
        elif key == "as_operator" and isinstance(value, str) and operator_problem(value):
            problems.append(f"models/model.json{where}: {operator_problem(value)}")
        elif key in ("as_graph", "as_graphs"):
            problems.append(f"models/model.json{where}: a subgraph (higher-order op) is refused")
        elif key == "expr_str" and not (isinstance(value, str) and _sympy_expr_ok(value)):
            problems.append(f"models/model.json{where}: symbolic expression {str(value)[:80]!r} is not plain sympy")
        elif key == "name" and isinstance(value, str) and (not _IDENT.fullmatch(value) or value.startswith("__")
                                                           or keyword.iskeyword(value)):
            problems.append(f"models/model.json{where}: name {value[:80]!r} is not a plain identifier")
        elif key in ("fqn", "target") and isinstance(value, str) and ".graph.nodes" not in where \
                and value and not _DOTTED.fullmatch(value):
            problems.append(f"models/model.json{where}: {key} {value[:80]!r} is not a dotted name")
        if len(problems) >= MAX_PROBLEMS:
            return problems
    seen = set()
    for i, node in enumerate(graph.get("nodes") or []):
        target = node.get("target") if isinstance(node, dict) else None
        why = operator_problem(target, node.get("inputs") or []) if isinstance(target, str) else "no target"
        if why and why not in seen:  # each refused operator once, at its first node
            seen.add(why)
            problems.append(f"models/model.json node {i} ({node.get('name', '?') if isinstance(node, dict) else '?'}): {why}")
            if len(problems) >= MAX_PROBLEMS:
                break
    return problems


def _check_tensor_config(doc, kind, prefix, names):
    problems = []
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        return [f"{kind} config: not a mapping"]
    for fqn, entry in config.items():
        if not _plain_dotted(fqn):
            problems.append(f"{kind} {fqn[:80]!r}: not a plain dotted name")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{kind} config entry {fqn!r}: not a mapping")
            continue
        if entry.get("use_pickle") is not False:
            problems.append(f"{kind} {fqn!r}: stored with pickle (use_pickle); only raw tensor bytes are loaded")
        path = entry.get("path_name")
        if not isinstance(path, str) or not re.fullmatch(prefix + r"[0-9]+", path):
            problems.append(f"{kind} {fqn!r}: entry {str(path)[:80]!r} is not a raw tensor file")
        elif path not in names:
            problems.append(f"{kind} {fqn!r}: its file {path} is missing")
        if not isinstance(entry.get("tensor_meta"), dict):
            problems.append(f"{kind} {fqn!r}: no tensor_meta")
    return problems


def _read_json(z, name):
    info = z.getinfo(name)
    if info.file_size > MAX_JSON_BYTES:
        raise ArchiveRefused([f"{name}: {info.file_size} bytes is too large"])
    try:
        return json.loads(z.read(name))
    except ValueError as e:
        raise ArchiveRefused([f"{name}: not valid JSON ({e})"]) from None


def _inspect(path):
    """(zipfile, top folder, {rel: info}, graph doc, problems)."""
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ArchiveRefused([f"{path}: not a readable zip archive ({e})"]) from None
    problems, entries, top = [], {}, None
    total = 0
    for info in z.infolist():
        name = info.filename
        head, _, rel = name.partition("/")
        if info.is_dir():
            continue
        if top is None and _TOP.fullmatch(head):
            top = head
        if head != top or not rel or ".." in rel.split("/"):
            problems.append(f"entry {name!r}: outside the archive's one folder")
            continue
        kind = _entry_kind(rel)
        if kind is None:
            problems.append(f"entry {name!r}: unknown kind of entry (only the graph, raw weights and constants are loaded)")
            continue
        if rel in entries:
            problems.append(f"entry {name!r}: appears twice")
        entries[rel] = info
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{path}: {total} bytes uncompressed is too large")
    for needed in ("models/model.json", "data/weights/model_weights_config.json"):
        if needed not in entries:
            problems.append(f"entry {top}/{needed} is missing")
    if problems:
        return z, top, entries, None, problems
    doc = _read_json(z, f"{top}/models/model.json")
    problems += check_graph(doc)
    weight_names = {rel.rsplit("/", 1)[1] for rel in entries if rel.startswith("data/weights/weight_")}
    problems += _check_tensor_config(_read_json(z, f"{top}/data/weights/model_weights_config.json"), "weight",
                                     "weight_", weight_names)
    if "data/constants/model_constants_config.json" in entries:
        const_names = {rel.rsplit("/", 1)[1] for rel in entries if rel.startswith("data/constants/tensor_")}
        problems += _check_tensor_config(_read_json(z, f"{top}/data/constants/model_constants_config.json"),
                                         "constant", "tensor_", const_names)
    return z, top, entries, doc, problems[:MAX_PROBLEMS]


def check_archive(path):
    """[] when the archive at path may be loaded (after sanitizing), else the problems, each naming
    the entry or operator."""
    try:
        z, *_, problems = _inspect(path)
    except ArchiveRefused as e:
        return e.problems
    z.close()
    return problems


def _strip_metadata(doc):
    for node in doc["graph_module"]["graph"].get("nodes") or []:
        if isinstance(node, dict):
            node["metadata"] = {}
    doc["graph_module"]["metadata"] = {}
    return doc


def sanitize_archive(path, dest, example_shape=(1, 8)):
    """Write a loadable copy of the checked archive to dest: the same graph (metadata dropped), the same
    raw tensors, and sample inputs made here. Raises ArchiveRefused when check_archive finds problems."""
    z, top, entries, doc, problems = _inspect(path)
    with z:
        if problems:
            raise ArchiveRefused(problems)
        buf = io.BytesIO()
        torch.save(((torch.zeros(example_shape, dtype=torch.long),), {}), buf)
        with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as out:
            for rel, info in entries.items():
                name = f"{top}/{rel}"
                if rel == "models/model.json":
                    out.writestr(name, json.dumps(_strip_metadata(doc)))
                elif rel == "data/sample_inputs/model.pt":
                    continue
                else:
                    with z.open(info) as src, out.open(name, "w", force_zip64=True) as dst:
                        while block := src.read(1 << 22):
                            dst.write(block)
            out.writestr(f"{top}/data/sample_inputs/model.pt", buf.getvalue())
    return dest
