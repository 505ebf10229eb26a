// How the nightly HTML report looks. `harness report --html DIR` runs `allure generate` with this file and
// passes what belongs to one run (report name, history file, the plan coverage as variables, global
// attachments) in the JSON file HARNESS_ALLURE_RUN names; without it the report is the plain results.
import { readFileSync } from "node:fs";

const run = process.env.HARNESS_ALLURE_RUN
  ? JSON.parse(readFileSync(process.env.HARNESS_ALLURE_RUN, "utf-8"))
  : {};

export default {
  name: run.name ?? "Dougust plan compliance",
  ...(run.historyPath ? { historyPath: run.historyPath } : {}),
  // Every night adds about 80 KB to the history and 110 KB to the one-file page (70 requirements):
  // a quarter of nights keeps the page near 15 MB.
  historyLimit: 90,
  variables: run.variables ?? {},
  globalAttachments: run.globalAttachments ?? [],
  // The Categories tab: what needs someone, by severity (in Allure's words: blocker is the plan's critical,
  // critical its high), apart from what was accepted or could not be seen. Only requirements: the drift
  // since last night is a result of its own.
  categories: [
    { name: "Failing requirements", matchers: { statuses: ["failed"], labels: { requirement: "." } },
      groupBy: ["severity"], expand: true },
    { name: "Could not be judged (errors)", matchers: { statuses: ["broken"], labels: { requirement: "." } },
      groupBy: ["severity"], expand: true },
    { name: "Waived deviations", matchers: { statuses: ["skipped"], labels: { tag: "^waived$" } } },
    { name: "Optional requirements failing", matchers: { statuses: ["skipped"], labels: { tag: "^optional-fail$" } } },
    { name: "Not observable on this target", matchers: { statuses: ["skipped"], labels: { requirement: "." } } },
    { name: "Other results (drift since the baseline)", matchers: { statuses: ["failed", "broken"] } },
  ],
  plugins: {
    awesome: {
      options: {
        // One self-contained index.html: it opens from a file or a CI artifact, without a server.
        singleFile: true,
        // The failures first, by the plan's severity (labels the harness adds; see harness/html_report.py),
        // and failures first inside every group.
        groupBy: ["verdict", "plan severity"],
        defaultSortBy: "status,asc",
        // A failed result opens on its evidence.
        stepTreeExpansion: "expand_failed_only",
        charts: [
          { type: "currentStatus", title: "Requirements by status" },
          { type: "statusDynamics", title: "Night by night" },
          { type: "statusTransitions", title: "Newly failing and fixed" },
          {
            type: "testResultSeverities",
            title: "Requirements by severity",
            levels: ["blocker", "critical", "normal", "minor", "trivial"],
            statuses: ["failed", "broken", "skipped", "passed", "unknown"],
            includeUnset: true,
          },
          {
            type: "stabilityDistribution",
            title: "Stability per plan section",
            skipStatuses: ["skipped", "unknown"],
            threshold: 90,
            groupBy: "feature",
          },
        ],
      },
    },
  },
};
