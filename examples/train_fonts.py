"""Train tiny "personality fonts" and keep their runs in an aoe store.

Each font has a personality (a vector) and a style its glyphs should take on. A small
model maps (personality, glyph) to a 24x24 glyph image; every run trains it (and the
personality with it) for a few steps, resuming from the font's newest run (the new run
names it as its parent: its lineage), and saves weights, optimizer state, the
personality, a sample sheet, per-glyph eval images and feedback through the aoe API.
The alias ``best`` follows the run with the lowest loss, and each font keeps a retention
policy (its 5 newest runs and its 2 best; the others go to the trash after each save).
Last, the best "fruity" run is forked into a new font that trains on in a bolder style.

    python examples/train_fonts.py            # into ./networks (or $AOE_STORE)
    aoe store ls                              # then browse what it saved
"""

from __future__ import annotations

import argparse
import io

import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

import aoe

GLYPHS = "AaBbCcEeGgKkRrSs"
SIZE = 24
STYLES = {
    "fruity": lambda im: im.filter(ImageFilter.GaussianBlur(1.2)).rotate(8),
    "dumb": lambda im: im.filter(ImageFilter.MaxFilter(3)),
    "aggressive-sans": lambda im: im.transform(im.size, Image.AFFINE, (1, 0.35, -4, 0, 1, 0)),
}


def render(glyph: str) -> Image.Image:
    """A glyph drawn with Pillow's built-in font, centred on a 24x24 canvas."""
    image = Image.new("L", (SIZE, SIZE), 0)
    font = ImageFont.load_default(size=20)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), glyph, font=font)
    draw.text(((SIZE - (right - left)) / 2 - left, (SIZE - (bottom - top)) / 2 - top), glyph, fill=255, font=font)
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).float().div(255).view(-1)


def to_png(pixels: torch.Tensor) -> bytes:
    image = Image.frombytes("L", (SIZE, SIZE), bytes(pixels.clamp(0, 1).mul(255).byte().tolist()))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class GlyphModel(torch.nn.Module):
    """(personality vector, glyph index) -> glyph image."""

    def __init__(self, personality_dims: int = 8, hidden: int = 256) -> None:
        super().__init__()
        self.glyphs = torch.nn.Embedding(len(GLYPHS), 32)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(personality_dims + 32, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, SIZE * SIZE), torch.nn.Sigmoid(),
        )

    def forward(self, personality: torch.Tensor, glyph_ids: torch.Tensor) -> torch.Tensor:
        vector = personality.expand(len(glyph_ids), -1)
        return self.net(torch.cat([vector, self.glyphs(glyph_ids)], dim=1))


def train_run(store: aoe.Store, font_id: str, style: str, personality: torch.Tensor, steps: int) -> str:
    """One training run: resume from the newest run if there is one, train, save. The
    personality is learned too, more slowly than the model, so it drifts run by run."""
    model = GlyphModel()
    resume = font_id if store.list_runs(font_id) else None  # a font alone names its newest run
    params = {"steps": steps, "lr": 3e-3, "style": style, "glyphs": GLYPHS}
    with store.start_run(font_id, params=params, tags=[style, "example"], resume_from=resume) as run:
        if run.resumed is not None:
            model.load_state_dict(run.resumed.weights["model"])
            personality = run.resumed.personality_vector
            print(f"  resuming {font_id} from run {run.resumed.metadata.run_id}")
        personality = personality.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([{"params": model.parameters()}, {"params": [personality], "lr": 3e-2}],
                                     lr=3e-3)
        if run.resumed is not None:
            optimizer.load_state_dict(run.resumed.weights["optimizer"])
        targets = torch.stack([to_tensor(STYLES[style](render(g))) for g in GLYPHS])
        ids = torch.arange(len(GLYPHS))
        for _ in range(steps):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(personality, ids), targets)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            images = model(personality, ids)
        per_glyph = ((images - targets) ** 2).mean(dim=1)
        sheet = torch.cat([torch.cat(list(images[i : i + 8].view(-1, SIZE, SIZE)), dim=1)
                           for i in range(0, len(GLYPHS), 8)], dim=0)
        sample = Image.frombytes("L", (sheet.shape[1], sheet.shape[0]), bytes(sheet.mul(255).byte().flatten().tolist()))
        run.save(
            weights={"model": model.state_dict(), "optimizer": optimizer.state_dict()},
            personality_vector=personality.detach(),
            sample_image=sample,
            eval_glyphs={glyph: to_png(images[i]) for i, glyph in enumerate(GLYPHS)},
            feedback={"final_loss": loss.item(), "glyph_loss": dict(zip(GLYPHS, per_glyph.tolist()))},
        )
    run_id: str = run.run_id  # type: ignore[assignment]
    keep_best(store, font_id, run_id)
    return run_id


def keep_best(store: aoe.Store, font_id: str, run_id: str) -> None:
    """Point the font's ``best`` alias at this run if its loss is the lowest yet; moved by
    compare-and-swap, so two trainers of one font never lose each other's best."""
    loss = store.get_run_info(font_id, run_id).metrics["final_loss"]
    best = store.aliases_of(font_id).get("best")
    if best is None or loss < store.get_run_info(font_id, best).metrics["final_loss"]:
        store.set_alias(font_id, "best", run_id, expected_run=best, note=f"final_loss {loss:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="store folder (default: $AOE_STORE or ./networks)")
    parser.add_argument("--runs", type=int, default=3, help="runs per font")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    args = parser.parse_args()
    torch.manual_seed(0)
    store = aoe.Store(args.root)
    existing = {font_id.split("-", 1)[1]: font_id for font_id in (store.list_fonts() if store.root.is_dir() else [])}
    for style in STYLES:
        font_id = existing.get(style) or store.create_font(style)
        store.set_retention(font_id, {"keep_last": 5, "keep_best": [(2, "metrics.final_loss")]})
        personality = torch.randn(8)
        for _ in range(args.runs):
            report(store, font_id, train_run(store, font_id, style, personality, args.steps))
    fruity = existing.get("fruity") or store.list_fonts()[0]
    forked = existing.get("fruity-bold")
    if forked is None:  # a new font from the best fruity run, no byte copied, trained on in another style
        forked, first = store.fork_font(f"{fruity}@best", "fruity-bold")
        print(f"forked {forked} from {fruity}@best: its first run is {first}")
    for _ in range(2):
        report(store, forked, train_run(store, forked, "dumb", torch.randn(8), args.steps))
    print(f"\nThe store at {store.root}:")
    for font_id in store.list_fonts():
        runs = store.list_runs(font_id)
        print(f"  {font_id}: {len(runs)} runs, newest {runs[-1].run_id}")
    print("Browse it with `aoe store serve` (a web page), `aoe store ls`, `aoe store show FONT_ID@best`,")
    print("`aoe store log --graph FONT_ID`, `aoe store diff FONT_ID RUN_A RUN_B`, or `aoe store get FONT_ID DEST`.")


def report(store: aoe.Store, font_id: str, run_id: str) -> None:
    info = store.get_run_info(font_id, run_id)
    print(f"{font_id} {run_id} {info.status} loss={info.metrics['final_loss']:.4f}")


if __name__ == "__main__":
    main()
