# Reference values for theramark.dynamics.cross_lagged from lavaan (R).
#
# Usage:
#   Rscript make_lavaan_reference.R CASES.csv OUT_DIR
#       CASES.csv has one row per fit: name, data (a long CSV: participant_id, session, <x>, <y>),
#       x, y, order (sessions joined by ";"), random_intercepts (TRUE/FALSE). For each case this
#       writes OUT_DIR/<name>_parameters.csv (every free parameter: lhs, op, rhs, est, se) and
#       OUT_DIR/<name>_fit.csv (fit measures), OUT_DIR/<name>_warnings.txt (lavaan's warnings), plus OUT_DIR/lavaan_version.txt.
#   Rscript make_lavaan_reference.R --export-demo-growth FILE.csv
#       writes lavaan's Demo.growth as a long table: x = c1..c4 (time-varying covariate),
#       y = t1..t4 (outcome), sessions t1..t4.
#
# The model syntax is the standard RI-CLPM of Hamaker, Kuiper & Grasman (2015) as written for lavaan
# by Mulder & Hamaker (2021): random intercepts with loadings 1, within components with loadings 1
# (observed residual variances 0, the lavaan() default), lagged paths free at every wave, within
# covariances at wave 1 and residual covariances later, RI variances and covariance, RIs not
# correlated with the wave-1 within components. The CLPM drops the random intercepts.
# Driven by make_reference.py in this folder.
suppressPackageStartupMessages(library(lavaan))

args <- commandArgs(trailingOnly = TRUE)

if (length(args) == 2 && args[1] == "--export-demo-growth") {
  d <- lavaan::Demo.growth
  long <- do.call(rbind, lapply(1:4, function(t) data.frame(
    participant_id = sprintf("dg%03d", seq_len(nrow(d))), session = paste0("t", t),
    c = d[[paste0("c", t)]], t = d[[paste0("t", t)]])))
  long <- long[order(long$participant_id, long$session), ]
  write.csv(long, args[2], row.names = FALSE)
  quit(save = "no")
}

stopifnot(length(args) == 2)
cases <- read.csv(args[1], stringsAsFactors = FALSE)
out_dir <- args[2]
writeLines(as.character(packageVersion("lavaan")), file.path(out_dir, "lavaan_version.txt"))

to_wide <- function(long, x, y, sessions) {
  wide <- NULL
  for (t in seq_along(sessions)) {
    part <- long[long$session == sessions[t], c("participant_id", x, y)]
    names(part) <- c("participant_id", paste0("x", t), paste0("y", t))
    wide <- if (is.null(wide)) part else merge(wide, part, by = "participant_id", all = TRUE)
  }
  wide
}

syntax <- function(n_waves, random_intercepts) {
  w <- seq_len(n_waves)
  lines <- character(0)
  if (random_intercepts) {
    lines <- c(lines,
      paste("RIx =~", paste0("1*x", w, collapse = " + ")),
      paste("RIy =~", paste0("1*y", w, collapse = " + ")))
  }
  lines <- c(lines, paste0("wx", w, " =~ 1*x", w), paste0("wy", w, " =~ 1*y", w))
  for (t in w[-1]) {
    lines <- c(lines,
      sprintf("wx%d ~ wx%d + wy%d", t, t - 1, t - 1),
      sprintf("wy%d ~ wx%d + wy%d", t, t - 1, t - 1))
  }
  if (random_intercepts) lines <- c(lines, "RIx ~~ RIx", "RIx ~~ RIy", "RIy ~~ RIy")
  lines <- c(lines, paste0("wx", w, " ~~ wx", w), paste0("wx", w, " ~~ wy", w), paste0("wy", w, " ~~ wy", w))
  paste(lines, collapse = "\n")
}

measures <- c("npar", "ntotal", "logl", "unrestricted.logl", "chisq", "df", "pvalue",
              "baseline.chisq", "baseline.df", "cfi", "tli", "rmsea", "srmr", "srmr_bentler",
              "srmr_bentler_nomean", "aic", "bic")

for (i in seq_len(nrow(cases))) {
  case <- cases[i, ]
  sessions <- strsplit(case$order, ";", fixed = TRUE)[[1]]
  long <- read.csv(case$data, stringsAsFactors = FALSE)
  wide <- to_wide(long, case$x, case$y, sessions)
  ri <- as.logical(case$random_intercepts)
  caught <- character(0)
  fit <- withCallingHandlers(
    lavaan(syntax(length(sessions), ri), data = wide, missing = "ml", meanstructure = TRUE,
           int.ov.free = TRUE, int.lv.free = FALSE, auto.fix.first = FALSE, auto.var = FALSE,
           auto.cov.lv.x = FALSE, estimator = "ML"),
    warning = function(w) {
      caught <<- c(caught, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  writeLines(caught, file.path(out_dir, paste0(case$name, "_warnings.txt")))
  pt <- parTable(fit)
  pt <- pt[pt$free > 0, c("lhs", "op", "rhs", "est", "se")]
  write.csv(pt, file.path(out_dir, paste0(case$name, "_parameters.csv")), row.names = FALSE)
  fm <- fitMeasures(fit, measures)
  write.csv(data.frame(measure = names(fm), value = as.numeric(fm)),
            file.path(out_dir, paste0(case$name, "_fit.csv")), row.names = FALSE)
  info <- lavInspect(fit, "options")
  cat(case$name, ": converged", lavInspect(fit, "converged"), "; information", info$information[1],
      "; observed.information", info$observed.information[1], "\n")
}
