"""What a run leaves for people: the summary, drift between nights, Allure results, the HTML report."""
