"""The Markdown model card (torch-free, so a card can be re-rendered without the training extra)."""

from __future__ import annotations

from typing import Any

from sarcoscope.conventions import TISSUES


def card_markdown(card: dict[str, Any]) -> str:
    """The card for people: what the model is, what it saw, how it did, how to reproduce it."""
    if "members" in card:
        return _ensemble_markdown(card)
    a, t, v = card["architecture"], card["training_data"], card["validation"]
    r = card["recipe"]
    lines = [
        *_heading(card),
        "",
        "## Architecture",
        f"{a['name']}; 2-D, channels {a['channels']}, strides {a['strides']}, {a['num_res_units']} residual "
        f"units per level, dropout {a['dropout']}; {a['parameters']:,} parameters.",
        "",
        *_input_output(card),
        "",
        "## Training data",
        t["description"] or "(no description given)",
        "",
        *(
            [f"- Fine-tuned from `{t['initialised_from']}` (its weights were the starting point)."]
            if t.get("initialised_from")
            else []
        ),
        f"- Phantom slices: {t['phantoms']}; data folders: {t['data_dirs'] or 'none'} "
        f"(label mapping `{t['label_mapping']}`).",
        f"- Train: {t['train']['slices']} slices ({t['train']['phantom_slices']} phantom, "
        f"{t['train']['data_slices']} from data: {', '.join(t['train']['data_cases']) or '-'}), "
        f"{t['train']['patients']} patients.",
        f"- Validation: {t['validation']['slices']} slices ({t['validation']['phantom_slices']} phantom, "
        f"{t['validation']['data_slices']} from data: {', '.join(t['validation']['data_cases']) or '-'}), "
        f"{t['validation']['patients']} patients. The split is by patient.",
        "",
        "## Recipe",
        f"Loss {r['lambda_dice']}·Dice + {r['lambda_ce']}·cross-entropy (MONAI DiceCELoss, softmax, "
        f"5 classes), RMSProp lr {r['learning_rate']}, batch {r['batch_size']}, up to {r['max_epochs']} "
        f"epochs, early stopping on validation loss with patience {r['patience']}. Augmentation: "
        + (
            f"rotation ±{r['rotate_deg']}°, scale ±{r['scale_range']}, shift ±{r['translate_mm']} mm, "
            f"left-right flip {r['flip_lr']}, Gaussian noise up to {r['noise_hu']} HU"
            + (f", Gaussian blur up to {r['blur_mm']} mm" if r.get("blur_mm") else "")
            + (
                f", elastic deformation (control points {r['elastic_spacing_mm']} mm apart, up to "
                f"{r['elastic_magnitude_mm']} mm)"
                if r.get("elastic")
                else ""
            )
            + (
                f", field-of-view cuts (probability {r['fov_cut']}, up to {r['fov_cut_max']:.0%} of the "
                "body's width)"
                if r.get("fov_cut")
                else ""
            )
            + (f", shown unenhanced (probability {r['unenhanced']})" if r.get("unenhanced") else "")
            if r["augment"]
            else "none"
        )
        + f"; windowing augmentation {'on' if r['window_augmentation'] else 'off'}. "
        "Every value is in `model_card.json` under `recipe`.",
        "",
        "## Validation (best epoch)",
        f"Epoch {v['best_epoch']} of {v['epochs_run']} "
        f"({'early stop' if v['stopped_early'] else 'no early stop'}"
        f"{'' if v['finished'] else ', run not finished'}), "
        f"{v['training_seconds'] / 60:.1f} min of training.",
        "",
        "| val_loss | val_accuracy | Dice muscle | Dice SAT | Dice VAT | Dice IMAT |",
        "|---|---|---|---|---|---|",
        f"| {v['val_loss']:.4f} | {v['val_accuracy']:.4f} | "
        + " | ".join(f"{v['val_dice'][k]:.3f}" for k in TISSUES)
        + " |",
        "",
        f"Raw network output on the validation crops, before HU refinement; {v['note']}.",
    ]
    if card.get("comparison"):
        lines += ["", *comparison_markdown(card["comparison"])]
    if card.get("evaluation"):
        lines += ["", "## Evaluation", card["evaluation"]]
    return "\n".join(lines) + "\n"


def _heading(card: dict[str, Any]) -> list[str]:
    software = card["software"]
    return [
        f"# Model card: {card['model_id']}",
        "",
        f"Created {card['created_utc']} with sarcoscope {software['sarcoscope']} (torch {software['torch']}, "
        f"MONAI {software['monai']}, ONNX opset {software['onnx_opset']}). File `{card['files']['onnx']}`, "
        f"sha256 `{card['files']['sha256']}`.",
    ]


def _input_output(card: dict[str, Any]) -> list[str]:
    i = card["input"]
    return [
        "## Input and output",
        f"- Pixel size {i['pixel_spacing_mm']} mm (the engine resamples other spacings and maps the output "
        "back to the CT's own grid).",
        f"- HU window {i['hu_window']}: {i['normalisation']}.",
        f"- Canvas: {i['canvas']}×{i['canvas']} model pixels with the body centred (as in training; larger "
        f"only when a body does not fit), any multiple of {i['size_multiple']} accepted by the ONNX model.",
        f"- Output: {card['output']}. Labels: "
        + ", ".join(f"{k} {name}" for k, name in card["labels"].items())
        + ".",
        f"- HU ranges of the engine's refinement: {card['hu_ranges']}.",
    ]


def _ensemble_markdown(card: dict[str, Any]) -> str:
    """An ensemble's card (training.ensemble): what it is, then each member's own card in full."""
    a, t, members = card["architecture"], card["training_data"], card["members"]
    lines = [
        *_heading(card),
        "",
        "## Architecture",
        f"{a['name']}; {a['parameters']:,} parameters in all. Members: "
        + ", ".join(f"{n} `{m['model_id']}`" for n, m in enumerate(members))
        + f". The learning loop (`sarcoscope train --from-store`) fine-tunes member {a['fine_tune_member']}.",
        "",
        *_input_output(card),
        "",
        "## Training data",
        t["description"],
        "",
        f"- Real slices seen by at least one member: {t['train']['data_slices']} "
        f"({', '.join(t['train']['data_cases']) or '-'}).",
    ]
    if card.get("comparison"):
        lines += ["", *comparison_markdown(card["comparison"])]
    if card.get("evaluation"):
        lines += ["", "## Evaluation", card["evaluation"]]
    for n, member in enumerate(members):
        own = card_markdown(member).replace("\n#", "\n##").removeprefix("# Model card: ")
        lines += ["", f"## Member {n}: {own}"]
    return "\n".join(lines) + "\n"


def comparison_markdown(comparison: dict[str, Any]) -> list[str]:
    """The comparison with the previous default (segmentation.registry.build_comparison) as a table."""
    split, new, old = comparison["split"], comparison["candidate"], comparison["baseline"]
    means = comparison["means"]

    def cells(values: dict[str, Any]) -> str:
        keys = ("muscle_dice", "sat_dice", "vat_dice", "imat_dice", "msv_dice")
        dice = " | ".join("-" if values[k] is None else f"{values[k]:.3f}" for k in keys)
        err, absolute = values["muscle_area_err_pct"], values.get("muscle_abs_area_err_pct")
        text = "-" if err is None else f"{err:+.2f}"
        if absolute is not None:  # the means: the rule compares the mean of absolute errors
            text += f" (mean of absolutes {absolute:.2f})"
        return f"{dice} | {text} |"

    lines = [
        "## Comparison with the previous default",
        f"This model (`{new}`) and the default it was fine-tuned from (`{old}`) segmented the same "
        f"{len(split['validation_cases'])} validation case(s) of {len(split['validation_patients'])} "
        f"patient(s), held out by patient (seed {split['seed']}, fraction {split['fraction']}; never trained "
        f"on, not used for early stopping), with the engine `{split['engine']}`. {comparison['rule']}",
        "",
        f"**Verdict: {'better' if comparison['better'] else 'not better'}** "
        f"({'; '.join(comparison['reasons'])}).",
        "",
        "| case | patient | model | muscle Dice | SAT Dice | VAT Dice | IMAT Dice | M+S+V Dice "
        "| muscle area error % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in comparison["cases"]:
        role = "new" if r["model"] == new else "previous"
        lines.append(f"| {r['case']} | {r['patient'] or '-'} | {role} | {cells(r)}")
    for model, role in ((new, "new"), (old, "previous")):
        lines.append(f"| **mean** | | {role} | {cells(means[model])}")
    return lines
