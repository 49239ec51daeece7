/**
 * A copy of a hot loop per driver class. A loop that calls a driver method for every page is
 * shared by every driver in the process, so its call site goes polymorphic as soon as two driver
 * classes have run (a compare run, a test suite, a benchmark) and V8 stops inlining the call:
 * every address argument is then boxed and each call costs 3-4x. Compiling the loop's own source
 * again per class gives each copy its own feedback, one class at its call site, and the call is
 * inlined again.
 *
 * A loop given here must name nothing outside itself (only its parameters and literals): its
 * copies are compiled from its source text, where no module binding exists.
 */
export function compilePerClass<F extends (...args: never[]) => unknown>(loop: F): (driver: object) => F {
  const copies = new WeakMap<object, F>();
  const source = `"use strict"; return (${loop.toString()});`;
  return (driver) => {
    const key = (Object.getPrototypeOf(driver) as object | null) ?? driver;
    let copy = copies.get(key);
    if (copy === undefined) {
      copy = new Function(source)() as F;
      copies.set(key, copy);
    }
    return copy;
  };
}
