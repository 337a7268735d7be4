// Lookups through c-ares, Node's resolver (`dns.promises.Resolver`), asking
// 127.0.0.1:53. Each argument is `<kind>:<what>`: 4:<name>, 6:<name>,
// srv:<name>, cname:<name>, reverse:<ip>; each line printed is
// `<argument>\t<JSON>`, an array of strings (SRV records as
// "<target> <port>") or {"err": ...}.
const dns = require('dns');

const resolver = new dns.promises.Resolver({ timeout: 5000, tries: 2 });
resolver.setServers(['127.0.0.1']);

const lookups = {
  '4': (name) => resolver.resolve4(name),
  '6': (name) => resolver.resolve6(name),
  srv: async (name) => (await resolver.resolveSrv(name)).map((s) => `${s.name} ${s.port}`),
  cname: (name) => resolver.resolveCname(name),
  reverse: (ip) => resolver.reverse(ip),
};

(async () => {
  for (const arg of process.argv.slice(2)) {
    const at = arg.indexOf(':');
    const [kind, what] = [arg.slice(0, at), arg.slice(at + 1)];
    let line;
    try {
      line = JSON.stringify(await lookups[kind](what));
    } catch (e) {
      line = JSON.stringify({ err: `${e.code || e}` });
    }
    console.log(`${arg}\t${line}`);
  }
})();
