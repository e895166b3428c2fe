"""What a checkpoint is, from the names and shapes of its tensors alone (nothing is read).

A Vera checkpoint is recognised by its structure, not by its names:
  1. wrapper prefixes are stripped (`model.diffusion_model.`, `module.`, `_orig_mod.`, ..., and a
     single prefix every tensor shares);
  2. Wan2.1 DiT key sets (original or diffusers names) are found under any prefix; three complete
     sets of equal shape are the three branches, named by tokens in their prefixes (edit / fg /
     layer / rgb, alpha / matte, composite / comp), else by their index in the paper's order
     (edit, alpha, composite);
  3. outside the branches, the two `[D, 16, 1, 2, 2]` patch embeddings are the source and mask
     embeddings (tokens src / source / input / video / cond vs mask, else order) and the two
     D-element tensors the alpha and composite layer embeddings (by name, else order).
One complete set and nothing else is a plain Wan2.1 T2V file. Anything ambiguous, incomplete or
left over is refused with the candidates listed; a key map (regex -> our key, JSON) renames or
drops tensors first. The result, a `Plan`, maps every key of our model to a tensor of the file.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..model.config import BRANCHES, HeadCountUnknown, VeraConfig, config_from_shapes
from .safetensors_io import CheckpointError

# diffusers Wan name -> Wan original name, applied in order to each key of one DiT.
DIFFUSERS_TO_WAN = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_q\.", ".q."),
    (r"\.to_k\.", ".k."),
    (r"\.to_v\.", ".v."),
    (r"\.to_out\.0\.", ".o."),
    (r"^(blocks\.\d+)\.norm2\.", r"\1.norm3."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
]
WRAPPERS = (
    "model.diffusion_model.",
    "diffusion_model.",
    "model.",
    "module.",
    "transformer.",
    "_orig_mod.",
)
SCALE_SUFFIXES = (".scale_weight", ".scale_input")
FP8_MARKER = "scaled_fp8"
BRANCH_TOKENS = {
    "edit": {"edit", "fg", "foreground", "layer", "rgb"},
    "alpha": {"alpha", "matte"},
    "composite": {"composite", "comp"},
}
EMBEDDING_TOKENS = {
    "source_embedding": {"src", "source", "input", "video", "cond"},
    "mask_embedding": {"mask"},
}
LAYER_TOKENS = {
    "layer_embedding_alpha": {"alpha", "matte"},
    "layer_embedding_composite": {"composite", "comp"},
}


def rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


@dataclass
class Plan:
    """How to build our model from a checkpoint.

    kind "vera": `sources` maps every key of `VeraModel(config).state_dict()` (fp8 weights excepted
    from their scales, see `scales`) to a tensor name of the file. kind "wan": `sources` maps the
    keys of one branch (Wan original names) to the file; the loader copies them into all three
    branches. `scales`: weight name in the file -> its `scale_weight` tensor (ComfyUI scaled fp8).
    `explain`: what was detected and by which rule, for `python -m vera info --explain`.
    """

    kind: str
    naming: str  # "wan-original" or "wan-diffusers" (inside the branches)
    config: VeraConfig | None
    sources: dict[str, str]
    scales: dict[str, str] = field(default_factory=dict)
    explain: list[str] = field(default_factory=list)
    note: str = ""  # why config is None, when it is
    sizes: dict = field(default_factory=dict)  # what the shapes fix when the head count is unknown

    @property
    def format(self) -> str:
        return "vera" if self.kind == "vera" else self.naming


# -- key maps --------------------------------------------------------------------------------------
def read_keymap(path: str | Path) -> list[tuple[re.Pattern, str | None]]:
    """A JSON object {regex: our key or null}; a regex must match a whole tensor name, the key may
    use its groups (\\1); null drops the tensor. Rules are tried in file order."""
    path = Path(path)
    try:
        rules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"key map {path}: cannot be read as JSON ({error})") from None
    if not isinstance(rules, dict) or not all(
        isinstance(v, (str, type(None))) for v in rules.values()
    ):
        raise CheckpointError(
            f"key map {path}: must be a JSON object of regex -> our key (or null "
            "to drop the tensor)"
        )
    compiled = []
    for pattern, target in rules.items():
        try:
            compiled.append((re.compile(pattern), target))
        except re.error as error:
            raise CheckpointError(
                f"key map {path}: {pattern!r} is not a valid regex ({error})"
            ) from None
    return compiled


KEYMAP_SUFFIX = ".vera-keymap.json"


def _keymap_names(place: Path) -> list[Path]:
    """Key map names for one file or folder, in order: a folder's own `vera-keymap.json`, then
    `<folder>.vera-keymap.json` beside it; a file's `<name>.vera-keymap.json`, then
    `<stem>.vera-keymap.json`. A shard index `<x>.safetensors.index.json` is named first as
    `<x>.safetensors`, the file it splits, then as itself."""
    if place.is_dir():
        return [place / KEYMAP_SUFFIX[1:], place.with_name(place.name + KEYMAP_SUFFIX)]
    files = [place]
    if place.name.endswith(".index.json"):
        files.insert(0, place.with_name(place.name[: -len(".index.json")]))
    return [f.with_name(name + KEYMAP_SUFFIX) for f in files for name in (f.name, f.stem)]


def keymap_candidates(path: Path, container: Path | None = None) -> list[Path]:
    """Where a key map for the weights at `path` is looked for, first found wins:
    1. beside `path` itself, named after it (see `_keymap_names`; a folder's own
       `vera-keymap.json` first);
    2. beside the container the weights belong to, when that is another path (`container`, the
       `Checkpoint.path`: the shard index of a shard or of a folder): for
       `model.safetensors.index.json`, `model.safetensors.vera-keymap.json`, then
       `model.vera-keymap.json`, then the index's own name + `.vera-keymap.json`;
    3. for a shard index, the folder of its shards: `<folder>/vera-keymap.json`, then
       `<folder>.vera-keymap.json` beside the folder.
    So a map beside the index or for the shard folder is found whether the index, any shard or
    the folder is given."""
    places = [Path(path)]
    if container is not None:
        places.append(Path(container))
        if Path(container).name.endswith(".index.json"):
            places.append(Path(container).parent)
    candidates = [name for place in places for name in _keymap_names(place)]
    return list(dict.fromkeys(candidates))


def keymap_beside(path: Path, container: Path | None = None) -> Path | None:
    """The key map picked up without being asked for (what the ComfyUI node uses): the first of
    `keymap_candidates` that exists."""
    return next((c for c in keymap_candidates(path, container) if c.is_file()), None)


def apply_keymap(names: list[str], rules, explain: list[str]) -> dict[str, str]:
    """-> {new name: original name}; dropped tensors are left out."""
    out, renamed, dropped = {}, 0, 0
    for name in names:
        rule = next(((p, t) for p, t in rules if p.fullmatch(name)), None)
        if rule is None:
            new = name
        elif rule[1] is None:
            dropped += 1
            continue
        else:
            new, renamed = rule[0].fullmatch(name).expand(rule[1]), renamed + 1
        if new in out:
            raise CheckpointError(f"key map: {out[new]!r} and {name!r} both become {new!r}")
        out[new] = name
    explain.append(f"key map: {renamed} tensors renamed, {dropped} dropped")
    return out


# -- structure -------------------------------------------------------------------------------------
def _strip_wrappers(names: list[str], explain: list[str]) -> dict[str, str]:
    """-> {stripped name: name}. Known wrappers are stripped while every name has one; then one
    more dotted prefix that every name shares (so a Vera file saved inside any module loads)."""
    current = {n: n for n in names}
    stripped = []
    while True:
        keys = list(current)
        wrapper = next((w for w in WRAPPERS if keys and all(k.startswith(w) for k in keys)), None)
        if wrapper is None:
            break
        current = {k[len(wrapper) :]: v for k, v in current.items()}
        stripped.append(wrapper)
    keys = list(current)
    parts = [k.split(".") for k in keys]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if common and all(len(p) > len(common) for p in parts) and "blocks" not in common:
        prefix = ".".join(common) + "."
        current = {k[len(prefix) :]: v for k, v in current.items()}
        stripped.append(prefix)
    if stripped:
        explain.append(f"wrapper prefix stripped: {''.join(stripped)}")
    return current


def _tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", text.lower()) if t}


@functools.lru_cache(maxsize=8)
def _branch_keys(config: VeraConfig) -> dict[str, tuple[int, ...]]:
    """Every key of one branch with its shape, read off a one-block branch on the meta device (its
    block repeated for every layer: building all of them there takes seconds)."""
    from ..model.mot import WanBranch

    with torch.device("meta"):
        one = WanBranch(config.replace(num_layers=1)).state_dict()
    keys = {}
    for key, value in one.items():
        if key.startswith("blocks.0."):
            for layer in range(config.num_layers):
                keys[f"blocks.{layer}.{key[len('blocks.0.'):]}"] = tuple(value.shape)
        else:
            keys[key] = tuple(value.shape)
    return keys


@dataclass
class _DiT:
    prefix: str
    naming: str
    names: dict[str, str]  # Wan original inner key -> stripped file name
    shapes: dict[str, tuple[int, ...]]


def _find_dits(shapes: dict[str, tuple[int, ...]]) -> list[_DiT]:
    """Every prefix under which a Wan2.1 DiT's blocks start, with its keys in Wan original names."""
    prefixes = set()
    for name in shapes:
        i = name.find("blocks.0.")
        while i >= 0:
            if i == 0 or name[i - 1] == ".":
                prefixes.add(name[:i])
            i = name.find("blocks.0.", i + 1)
    dits = []
    for prefix in sorted(prefixes):
        nested = [q for q in prefixes if len(q) > len(prefix) and q.startswith(prefix)]
        inner = {
            n[len(prefix) :]: n
            for n in shapes
            if n.startswith(prefix) and not any(n.startswith(q) for q in nested)
        }
        diffusers = any(k.startswith("condition_embedder.") or ".attn1." in k for k in inner)
        names = {rename(k, DIFFUSERS_TO_WAN) if diffusers else k: n for k, n in inner.items()}
        dits.append(
            _DiT(
                prefix,
                "wan-diffusers" if diffusers else "wan-original",
                names,
                {k: shapes[n] for k, n in names.items()},
            )
        )
    return dits


def _complete(
    dit: _DiT, num_heads: int | None
) -> tuple[VeraConfig | None, list[str], HeadCountUnknown | None]:
    """(config, missing or misshapen Wan keys, unknown) of one DiT key set, whose keys that are no
    Wan key are moved out of it (to be conditioning or left over); config None when its shapes do
    not fix one (`unknown` says why and holds the sizes they do fix)."""
    unknown = None
    try:
        config = config_from_shapes(dit.shapes, num_heads)
    except HeadCountUnknown as error:
        unknown = error
        config = config_from_shapes(dit.shapes, 1)  # to check the keys; the heads stay unknown
    except ValueError as error:  # a key the sizes are read from is missing
        return None, [str(error)], None
    expected = _branch_keys(config)
    for key in [k for k in dit.shapes if k not in expected]:
        del dit.shapes[key], dit.names[key]
    missing = sorted(k for k in expected if k not in dit.shapes)
    wrong = [
        f"{k} (shape {dit.shapes[k]}, expected {expected[k]})"
        for k in expected
        if k in dit.shapes and tuple(dit.shapes[k]) != expected[k]
    ]
    return (None if unknown else config), missing + wrong, unknown


def _assign(
    candidates: list[str], token_sets: dict[str, set[str]], what: str, indices_of=None
) -> tuple[dict[str, str], str]:
    """Roles for candidate names -> ({role: candidate}, rule). By distinguishing name tokens; else
    by an index in the names (paper order); else, when no name says anything, by order. Refuses
    when names point to roles ambiguously."""
    roles = list(token_sets)
    common = set.intersection(*(_tokens(c) for c in candidates)) if candidates else set()
    matches = {
        c: {r for r, toks in token_sets.items() if toks & (_tokens(c) - common)} for c in candidates
    }
    claimed = [m for m in matches.values() if m]
    unique = all(len(m) <= 1 for m in matches.values()) and len(
        {next(iter(m)) for m in claimed}
    ) == len(claimed)
    if unique and len(claimed) == len(roles):
        return {next(iter(m)): c for c, m in matches.items()}, "by name"
    if unique and len(claimed) == len(roles) - 1:  # one unnamed candidate takes the one role left
        assigned = {next(iter(m)): c for c, m in matches.items() if m}
        left = next(r for r in roles if r not in assigned)
        assigned[left] = next(c for c, m in matches.items() if not m)
        return assigned, "by name; the unnamed one takes the role left"
    if claimed:
        listed = "; ".join(
            f"{c!r} -> {', '.join(sorted(m)) or 'nothing'}" for c, m in matches.items()
        )
        raise CheckpointError(
            f"cannot tell which {what} is which from the names ({listed}); write a "
            "key map (see the README) that renames them"
        )
    if indices_of is not None:
        indices = indices_of(candidates)
        if all(i is not None for i in indices) and len(set(indices)) == len(indices):
            ordered = [c for _, c in sorted(zip(indices, candidates))]
            return dict(zip(roles, ordered)), "by index, in the paper's order"
        raise CheckpointError(
            f"cannot tell which {what} is which: {', '.join(map(repr, candidates))} "
            "carry no name or index that says; write a key map (see the README)"
        )
    return dict(zip(roles, candidates)), "by order in the file: no name says which"


def _dotted_index(prefix: str) -> int | None:
    """The last whole dotted number in a prefix (`transformers.0.` -> 0)."""
    numbers = re.findall(r"(?:^|\.)(\d+)(?:\.|$)", prefix)
    return int(numbers[-1]) if numbers else None


def _trailing_indices(prefixes: list[str]) -> list[int] | None:
    """The numbers ending the last part of each prefix (`dit1.`, `transformer_0.`), only when the
    prefixes differ in nothing else: `dit1.` / `net2.` say nothing about order."""
    found = [re.fullmatch(r"(.*\D)(\d+)\.", p) for p in prefixes]
    if not all(found) or len({m.group(1) for m in found}) != 1:
        return None
    return [int(m.group(2)) for m in found]


def _indices(prefixes: list[str]) -> list[int | None]:
    """Each branch prefix's index: whole dotted numbers when they tell the prefixes apart, else
    numbers ending the prefixes (see `_trailing_indices`); None where neither says."""
    dotted = [_dotted_index(p) for p in prefixes]
    if None not in dotted and len(set(dotted)) == len(dotted):
        return dotted
    return _trailing_indices(prefixes) or dotted


def _modules(names: list[str]) -> dict[str, list[str]]:
    """Tensor names grouped by module (a trailing .weight / .bias removed)."""
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(re.sub(r"\.(weight|bias)$", "", n), []).append(n)
    return out


def _conditioning(
    rest: dict[str, tuple[int, ...]], patch_shape: tuple[int, ...], dim: int, explain: list[str]
) -> tuple[dict[str, str], set[str]]:
    """The source / mask patch embeddings and the two layer embeddings among the tensors outside
    the branches -> ({our key: file name}, names used)."""
    sources, used = {}, set()
    modules = _modules(list(rest))
    convs = [
        m
        for m, ns in modules.items()
        if any(n.endswith("weight") or n == m for n in ns)
        and tuple(rest[next(n for n in ns if n != f"{m}.bias")]) == patch_shape
    ]
    if len(convs) > 2:
        raise CheckpointError(
            f"{len(convs)} patch embeddings outside the branches "
            f"({', '.join(convs)}); a Vera file has two (source and mask)"
        )
    if convs:
        if len(convs) == 1:
            roles, rule = {"source_embedding": convs[0]}, "the only one"
            explain.append("mask embedding: none in the file, starts at zero (masks are ignored)")
        else:
            roles, rule = _assign(convs, EMBEDDING_TOKENS, "patch embedding")
        for role, module in roles.items():
            for n in modules[module]:
                part = "bias" if n.endswith(".bias") else "weight"
                if part == "bias" and tuple(rest[n]) != (dim,):
                    raise CheckpointError(f"{n}: bias of shape {rest[n]}, expected ({dim},)")
                sources[f"{role}.{part}"] = n
                used.add(n)
            explain.append(f"{role.replace('_', ' ')}: {module} ({rule})")
    vectors = [
        n for n in rest if n not in used and tuple(rest[n]) in ((dim,), (1, dim), (1, 1, dim))
    ]
    if vectors:
        if len(vectors) != 2:
            raise CheckpointError(
                f"{len(vectors)} {dim}-element tensors outside the branches "
                f"({', '.join(vectors)}); a Vera file has two layer embeddings "
                "(alpha and composite)"
            )
        roles, rule = _assign(vectors, LAYER_TOKENS, "layer embedding")
        for role, n in roles.items():
            sources[role] = n
            used.add(n)
            explain.append(f"{role.replace('_', ' ')}: {n} ({rule})")
    return sources, used


def _refuse_wrong_kind(path, names: list[str], shapes: dict) -> None:
    has = lambda fragment: any(fragment in n for n in names)
    # Before the VAE test: a full T5 (encoder and decoder) would pass for a VAE.
    if has("shared.weight") or has("encoder.block.0."):
        raise CheckpointError(f"{path}: this is a text encoder (UMT5) file, not a diffusion model")
    if has("decoder.") and has("encoder.") and not has("blocks.0."):
        raise CheckpointError(
            f"{path}: this is a VAE file, not a diffusion model; load it as the VAE instead"
        )
    if has("img_emb.") or has("k_img") or has("add_k_proj") or has("image_embedder"):
        raise CheckpointError(
            f"{path}: this is a Wan image-to-video (I2V) model; Vera is built from a "
            "Wan2.1 text-to-video (T2V) model"
        )
    if has("vace_blocks") or has("vace_patch_embedding"):
        raise CheckpointError(
            f"{path}: this is a Wan VACE model; Vera is built from a plain Wan2.1 T2V model"
        )
    for name, shape in shapes.items():
        if name.endswith("patch_embedding.weight") and len(shape) == 5 and shape[1] != 16:
            raise CheckpointError(
                f"{path}: {name} takes {shape[1]} input channels; a Wan2.1 T2V model takes 16 (36 "
                "means I2V/FLF2V, 48 Wan2.2-5B): use a Wan2.1 T2V file"
            )


def plan_from_shapes(
    path,
    shapes: dict[str, tuple[int, ...]],
    num_heads: int | None = None,
    config: VeraConfig | None = None,
    keymap=None,
    require_config: bool = True,
) -> Plan:
    """The plan for a checkpoint with these tensor names and shapes (in stored order).

    config: a config the file carries (its metadata); its head count wins. keymap: rules from
    `read_keymap`. require_config=False describes a file whose head count is unknown (for info).
    """
    explain: list[str] = []
    names = list(shapes)
    scales = [n for n in names if n.endswith(SCALE_SUFFIXES) or n == FP8_MARKER]
    names = [n for n in names if n not in scales]
    renamed = apply_keymap(names, keymap, explain) if keymap else {n: n for n in names}
    stripped = _strip_wrappers(list(renamed), explain)
    original = {k: renamed[v] for k, v in stripped.items()}  # stripped name -> file name
    local = {k: tuple(shapes[v]) for k, v in original.items()}
    _refuse_wrong_kind(path, list(local), local)
    dits = _find_dits(local)
    if not dits:
        sample = ", ".join(names[:5])
        raise CheckpointError(
            f"{path}: not a Wan2.1 T2V or Vera checkpoint (no Wan2.1 transformer "
            f"blocks under any prefix; first tensors: {sample})"
        )
    heads = num_heads or (config.num_heads if config is not None else None)
    checked = [(d, *_complete(d, heads)) for d in dits]
    for dit, cfg, missing, note in checked:
        if missing:
            shown = ", ".join(missing[:4])
            raise CheckpointError(
                f"{path}: the Wan2.1 transformer under {dit.prefix or '(no prefix)'!r} "
                f"is incomplete: {len(missing)} missing or wrong ({shown}); is this "
                "the whole file (1.3B vs 14B, all shards)?"
            )
    configs = [_agree(path, cfg, config) for _, cfg, _, _ in checked]
    unknown = next((u for _, _, _, u in checked if u), None)
    if unknown and require_config:
        raise unknown
    note, sizes = (str(unknown), unknown.sizes) if unknown else ("", {})
    scale_of = {}
    for s in scales:
        if s.endswith(".scale_weight"):
            scale_of[s[: -len("scale_weight")] + "weight"] = s
    if len(dits) == 1:
        dit = dits[0]
        rest = sorted(set(local) - set(dit.names.values()))
        if rest:
            raise CheckpointError(
                f"{path}: one Wan2.1 transformer plus {len(rest)} other tensors "
                f"({', '.join(original[n] for n in rest[:5])}); neither a Wan2.1 "
                "T2V file nor a Vera file (which has three transformers)"
            )
        explain.insert(
            0,
            f"layout: one Wan2.1 T2V transformer ({dit.naming} names"
            + (f", under {dit.prefix!r}" if dit.prefix else "")
            + ")",
        )
        sources = {k: original[n] for k, n in dit.names.items()}
        return Plan(
            "wan", dit.naming, configs[0], sources, _file_scales(sources, scale_of), explain, note,
            sizes,
        )
    if len(dits) != 3:
        listed = ", ".join(repr(d.prefix) for d in dits)
        raise CheckpointError(
            f"{path}: {len(dits)} Wan2.1 transformers ({listed}); a Vera file has "
            "three (edit, alpha, composite)"
        )
    if len({tuple(sorted(d.shapes.items())) for d in dits}) != 1:
        raise CheckpointError(
            f"{path}: the three transformers ({', '.join(repr(d.prefix) for d in dits)}) "
            "differ in shape; Vera's branches are copies of one Wan2.1 size"
        )
    try:
        by_role, rule = _assign([d.prefix for d in dits], BRANCH_TOKENS, "transformer", _indices)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    dit_of = {d.prefix: d for d in dits}
    sources = {}
    for role in BRANCHES:
        dit = dit_of[by_role[role]]
        sources.update({f"branches.{role}.{k}": original[n] for k, n in dit.names.items()})
        explain.append(f"branch {role}: {dit.prefix!r} ({rule})")
    naming = dits[0].naming
    explain.insert(0, f"layout: Vera, three Wan2.1 transformers ({naming} names)")
    in_branches = {n for d in dits for n in d.names.values()}
    rest = {n: local[n] for n in local if n not in in_branches}
    cfg = configs[0]
    if cfg is not None:
        try:
            extra, used = _conditioning(
                rest, tuple(local[dits[0].names["patch_embedding.weight"]]), cfg.dim, explain
            )
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from None
        sources.update({k: original[n] for k, n in extra.items()})
        left = sorted(set(rest) - used)
        if left:
            raise CheckpointError(
                f"{path}: {len(left)} tensors outside the branches are not Vera's "
                f"conditioning ({', '.join(original[n] for n in left[:6])}); drop "
                "or rename them with a key map (see the README)"
            )
        if "layer_embedding_alpha" not in sources:
            raise CheckpointError(
                f"{path}: no layer embeddings (two {cfg.dim}-element tensors) "
                "outside the branches; the file is incomplete"
            )
        if "source_embedding.weight" not in sources:
            raise CheckpointError(
                f"{path}: no source-video patch embedding outside the branches; "
                "the file is incomplete"
            )
    return Plan(
        "vera", naming, cfg, sources, _file_scales(sources, scale_of), explain, note, sizes
    )


def _agree(path, inferred: VeraConfig | None, stored: VeraConfig | None) -> VeraConfig | None:
    """The config a file stores (its conditioning mode and exact settings) when its shapes agree
    with it; else a refusal. Without one, the config the shapes imply."""
    if inferred is None or stored is None:
        return inferred
    sizes = lambda c: (
        c.dim,
        c.num_layers,
        c.ffn_dim,
        c.text_dim,
        c.freq_dim,
        c.in_channels,
        c.out_channels,
        c.patch_size,
        c.cross_attn_norm,
    )
    if sizes(inferred) != sizes(stored):
        raise CheckpointError(
            f"{path}: the config in its metadata ({stored}) does not match its "
            f"tensor shapes ({inferred}); the file was edited or mislabelled"
        )
    return stored


def _file_scales(sources: dict[str, str], scale_of: dict[str, str]) -> dict[str, str]:
    return {n: scale_of[n] for n in sources.values() if n in scale_of}
