"""Exports (issue #15): selections of a sink written as chunked files to exports/ or an S3 bucket."""
