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
      copy = new Function(uniqueSource(source))() as F;
      copies.set(key, copy);
    }
    return copy;
  };
}

/**
 * A copy of `loop` per set of values for its parameters named in `names`: each copy is compiled
 * from the loop's source with those parameters taken from the copy's closure instead (the copy
 * keeps the loop's signature and ignores what is passed for them). Each copy has feedback of its
 * own, seeing only its own driver, arrays and stores, and V8 compiles it for them alone. The same
 * rule as {@link compilePerClass}: the loop names nothing outside itself.
 */
export function compileBound<F extends (...args: never[]) => unknown>(
  loop: F,
  names: readonly string[],
): (values: readonly unknown[]) => F {
  const src = loop.toString();
  const open = src.indexOf("(");
  const close = src.indexOf(")", open);
  const params = src
    .slice(open + 1, close)
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "");
  for (const n of names)
    if (!params.includes(n)) throw new Error(`compileBound: ${loop.name} has no parameter '${n}'`);
  const own = params.map((p) => (names.includes(p) ? `${p}$bound` : p));
  const source = `"use strict"; return function ${loop.name}(${own.join(", ")})${src.slice(close + 1)};`;
  return (values) => {
    if (values.length !== names.length)
      throw new Error(`compileBound: ${names.length} values expected, got ${values.length}`);
    return new Function(...names, uniqueSource(source))(...values) as F;
  };
}

let copies = 0;

/**
 * `source` made unique with a trailing comment: V8 caches what `new Function` compiles by its
 * source text, and two copies from one cached compile share one feedback vector (so their call
 * sites go polymorphic together) and cannot fold their own constants.
 */
function uniqueSource(source: string): string {
  copies++;
  return `${source}\n// copy ${copies}`;
}
