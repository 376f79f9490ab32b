"""Command line: a thin layer over the library.

Bad input prints one line, ``volvqa: error: <file>: <problem>``, on stderr
and exits with status 2 (``--debug`` shows the traceback instead).
"""
from __future__ import annotations

import sys
import traceback

import click

from volvqa.errors import VolvqaInputError

#: Library parameter names whose flag is not ``--`` + the name with dashes.
FLAGS = {"qa_dir": "--qa", "prompt_style": "--prompt", "compare": "--compare", "label_spec": "--labels",
         "timeout_s": "--agent-timeout"}


def flag_of(param: str) -> str:
    """The command-line flag of a library parameter named in a VolvqaInputError."""
    return FLAGS.get(param, "--" + param.replace("_", "-"))


class _Group(click.Group):
    """Turns errors into one line on stderr and a status code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VolvqaInputError as e:
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            click.echo(f"volvqa: error: {e.render(flag_of)}", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("volvqa: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader went away (`volvqa ... | head`): stop quietly, as a shell tool does.
            import os
            sys.stdout = open(os.devnull, "w")
            ctx.exit(141)
        except Exception as e:  # noqa: BLE001 - last line of defence for users
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            msg = " ".join(str(e).split()) or type(e).__name__
            click.echo(f"volvqa: internal error: {type(e).__name__}: {msg} (rerun with --debug)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="volvqa")
@click.pass_context
def main(ctx, debug):
    """volvqa: 3D CT VQA benchmarks whose answers come from segmentation masks."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


load_opts = [
    click.option("--series-uid", default=None, help="DICOM SeriesInstanceUID when a folder holds several."),
    click.option("--allow-non-ct", is_flag=True, help="Load images whose intensities are not plausible CT HU."),
    click.option("--max-voxels", type=int, default=None,
                 help="Refuse images with more voxels (default 2^31, or VOLVQA_MAX_VOXELS)."),
]


def with_load_opts(f):
    for o in reversed(load_opts):
        f = o(f)
    return f
