"""Train tiny "personality fonts" and keep every run in an aoe store.

Each font has a personality (a vector) and a style its glyphs should take on. A small
model maps (personality, glyph) to a 24x24 glyph image; every run trains it (and the
personality with it) for a few steps, resuming from the font's newest run, and saves
weights, optimizer state, the personality, a sample sheet, per-glyph eval images and
feedback through the aoe API.

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
    state = None
    if store.list_runs(font_id):
        state, personality, previous = store.load_model(font_id)
        model.load_state_dict(state["model"])
        print(f"  resuming {font_id} from run {previous.run_id}")
    personality = personality.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": model.parameters()}, {"params": [personality], "lr": 3e-2}], lr=3e-3)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    targets = torch.stack([to_tensor(STYLES[style](render(g))) for g in GLYPHS])
    ids = torch.arange(len(GLYPHS))
    params = {"steps": steps, "lr": 3e-3, "style": style, "glyphs": GLYPHS}
    with store.start_run(font_id, params=params, tags=[style, "example"]) as run:
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
    return run.run_id  # type: ignore[return-value]


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
        personality = torch.randn(8)
        for _ in range(args.runs):
            run_id = train_run(store, font_id, style, personality, args.steps)
            info = store.get_run_info(font_id, run_id)
            print(f"{font_id} {run_id} {info.status} loss={store.load_feedback(font_id, run_id)['final_loss']:.4f}")
    print(f"\nThe store at {store.root}:")
    for font_id in store.list_fonts():
        runs = store.list_runs(font_id)
        print(f"  {font_id}: {len(runs)} runs, newest {runs[-1].run_id}")
    print("Browse it with `aoe store serve` (a web page), `aoe store ls`, `aoe store show FONT_ID`,")
    print("`aoe store diff FONT_ID RUN_A RUN_B`, or `aoe store get FONT_ID DEST`.")


if __name__ == "__main__":
    main()
