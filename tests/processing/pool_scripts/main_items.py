"""Run by test_pool_faults.py as ``python main_items.py START_METHOD``.

The *items* (not only the function) hold things defined in this script's ``__main__``: a
lambda, functions and a class defined under ``if __name__ == "__main__":`` (which a spawn or
forkserver worker, re-importing this file as ``__mp_main__``, does not have), and instances
of that class. The standard pickle sends none of them; cloudpickle sends them by value.
Results and an exception of a class from ``__main__`` come back as the very classes defined
here. Prints one JSON line.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from typing import Any

from suitkaise.processing import Pool

to_the_fifth = lambda x: x**5  # noqa: E731  (a lambda bound to a name is the point)


def apply(pair: tuple[Any, Any]) -> Any:
    fn, argument = pair
    return fn(argument)


if __name__ == "__main__":

    def minus_one(x: int) -> int:
        return x - 1

    class Guarded:
        def __init__(self, value: int) -> None:
            self.value = value

        def twice(self) -> int:
            return 2 * self.value

    class GuardedError(Exception):
        pass

    def fail(x: int) -> int:
        raise GuardedError(f"no {x}")

    multiprocessing.set_start_method(sys.argv[1])
    out: dict[str, Any] = {}
    with Pool(2) as pool:
        out["functions"] = pool.map(apply, [(to_the_fifth, 2), (minus_one, 10)])
        out["lambda_items"] = pool.map(apply, [(lambda x: x * 7, 6)])
        out["instances"] = pool.map(lambda g: g.twice(), [Guarded(3), Guarded(4)])
        out["star"] = pool.star().map(lambda f, x: f(x), [(minus_one, 1), (to_the_fifth, 1)])
        back = pool.map(Guarded, [5, 6])
        out["results"] = [type(r) is Guarded and r.value for r in back]
        try:
            pool.map(apply, [(fail, 9)])
        except GuardedError as error:
            out["error"] = [type(error) is GuardedError, str(error)]
    print(json.dumps(out), flush=True)
