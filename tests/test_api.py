"""The public API (what each module's `__all__` exports) carries type hints."""

import importlib
import inspect
import pkgutil

import glow_tf

SKIP_PARAMS = {"self", "cls"}


def _modules():
  yield glow_tf
  for info in pkgutil.walk_packages(glow_tf.__path__, "glow_tf."):
    yield importlib.import_module(info.name)


def _unannotated(fn, where):
  try:
    sig = inspect.signature(fn)
  except (TypeError, ValueError):
    return []
  missing = [p.name for p in sig.parameters.values()
             if p.name not in SKIP_PARAMS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
             and p.annotation is inspect.Parameter.empty]
  returns = fn.__name__ != "__init__" and sig.return_annotation is inspect.Signature.empty
  out = [f"{where}: parameter {name}" for name in missing]
  if returns:
    out.append(f"{where}: return")
  return out


def _public_methods(cls):
  for name, attr in vars(cls).items():
    if name.startswith("_") and name not in ("__init__", "__call__"):
      continue
    if isinstance(attr, property):
      attr = attr.fget
    fn = getattr(attr, "__wrapped__", attr)
    # (TFP's metaclasses copy inherited methods into a subclass: only ours count.)
    if inspect.isfunction(fn) and fn.__module__.startswith("glow_tf"):
      yield name, fn


def test_public_api_has_type_hints():
  problems = []
  for module in _modules():
    for name in getattr(module, "__all__", []):
      obj = getattr(module, name)
      if inspect.ismodule(obj) or getattr(obj, "__module__", None) != module.__name__:
        continue  # re-exports are checked where they are defined
      if inspect.isclass(obj):
        if issubclass(obj, BaseException):
          continue
        for method_name, fn in _public_methods(obj):
          problems += _unannotated(fn, f"{module.__name__}.{name}.{method_name}")
      elif inspect.isfunction(obj) or inspect.isfunction(getattr(obj, "__wrapped__", None)):
        problems += _unannotated(getattr(obj, "__wrapped__", obj), f"{module.__name__}.{name}")
  assert not problems, "\n".join(problems)
