"""Operation types written as typed functions, with no form class: flat annotated parameters, one
pydantic model parameter, one dataclass parameter. The tests import this module and name it in
BATCHSITE_OPERATION_TYPES for the workers they start."""

import dataclasses
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from jobs.optypes.base import Secret, operation_type


@operation_type(key="typed.resize", label="Typed: resize", items_help="One image URL per line.")
def resize(
    ctx,
    width: Annotated[int, Field(ge=1, le=4000, description="Pixels across.")] = 800,
    fit: Literal["cover", "contain"] = "cover",
    quality: Annotated[float, Field(gt=0, le=1, title="JPEG quality")] = 0.8,
    suffix: Annotated[str, Field(max_length=10, pattern=r"^[a-z]*$")] = "small",
    sharpen: bool = False,
    tags: list[str] | None = None,
    token: Annotated[str, Secret] = "",
) -> dict:
    """Resizes each image (pretends to)."""
    ctx.add_rows([{"image": ctx.label, "width": width, "fit": fit}])
    return {
        "width": width,
        "fit": fit,
        "quality": quality,
        "suffix": suffix,
        "sharpen": sharpen,
        "tags": tags,
        "token_length": len(token),
    }


class Size(BaseModel):
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class ThumbnailParams(BaseModel):
    size: Size = Size(width=64, height=64)
    name: Annotated[str, Field(min_length=1)]


@operation_type(key="typed.thumbnail", label="Typed: thumbnail")
def thumbnail(params: ThumbnailParams) -> ThumbnailParams:
    return params


@dataclasses.dataclass
class Greeting:
    greeting: str = "Hello"
    times: int = 1


@operation_type(key="typed.greet", label="Typed: greet")
def greet(ctx, options: Greeting) -> dict:
    assert isinstance(options, Greeting)
    return {"text": " ".join([f"{options.greeting}, {ctx.label}!"] * options.times)}
