/*
 * What a driver callback returned or threw, examined without trusting it: every probe catches,
 * because a hostile value may throw from a getter or a Proxy trap.
 */

/** Whether `x` looks like a thenable (or hides its `then`). Never throws. */
export function isThenable(x: unknown): boolean {
  if ((typeof x !== "object" || x === null) && typeof x !== "function") return false;
  try {
    return typeof (x as { then?: unknown }).then === "function";
  } catch {
    return true;
  }
}

/** Whether `x` is a generator object (has `next` and is its own iterator). Never throws. */
export function isStepGenerator(x: unknown): x is Iterator<string, void, void> {
  if (typeof x !== "object" || x === null) return false;
  try {
    return typeof (x as { next?: unknown }).next === "function" && hasIterator(x);
  } catch {
    return false;
  }
}

export function hasIterator(x: unknown): boolean {
  try {
    return typeof (x as { [Symbol.iterator]?: unknown })[Symbol.iterator] === "function";
  } catch {
    return false;
  }
}

/**
 * If `ret` is a thenable (a Promise, an async function's result), attach a no-op rejection
 * handler so its rejection cannot kill the process, and say what it was; null otherwise.
 */
export function asyncReturn(ret: unknown): string | null {
  if ((typeof ret !== "object" || ret === null) && typeof ret !== "function") return null;
  let then: unknown;
  try {
    then = (ret as { then?: unknown }).then;
  } catch {
    return "returned an object whose 'then' cannot be read";
  }
  if (typeof then !== "function") return null;
  try {
    (then as (ok: unknown, err: unknown) => unknown).call(ret, undefined, () => {});
  } catch {
    // A hostile thenable: nothing more can be done with it.
  }
  return "returned a Promise (or another thenable)";
}
